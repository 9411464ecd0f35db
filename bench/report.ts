/**
 * Metrics, medians and the markdown table: one row per metric, one column
 * per variant with its ratio to direct, to haproxy or to openbsd-inetd,
 * then the target (issue 11 item 9) and whether each tcpproxy engine meets it.
 */
import type { VariantName } from './variants';
import { HANDLER_VARIANTS, PROXY_VARIANTS, VARIANT_LABELS } from './variants';

export type MetricKey =
  | 'thrUp1'
  | 'thrDown1'
  | 'thrUp8'
  | 'gibMoved'
  | 'cpuPerGiB'
  | 'connPerSec'
  | 'cpuUsPerConn'
  | 'handlerConnPerSec'
  | 'handlerCpuUsPerConn'
  | 'rttP50'
  | 'rttP99'
  | 'rss1'
  | 'rss2';

/** The variant a metric's ratios and target are taken against. */
export type Reference = 'haproxy' | 'inetd';

const REF_SUFFIX: Record<Reference, string> = { haproxy: 'h', inetd: 'i' };

export interface Target {
  /** `>=`: the proxy's value must be at least factor × the reference's; `<=`: at most. */
  readonly op: '>=' | '<=';
  readonly factor: number;
  /** Also required: this metric (a throughput) at least 1.0× the reference's (CPU per GiB "at ≥ its throughput"). */
  readonly atLeastAsMuch?: MetricKey;
}

export interface MetricDef {
  readonly key: MetricKey;
  readonly label: string;
  readonly unit: string;
  readonly digits: number;
  /** Has a value only with a proxy (CPU and memory of the proxy). */
  readonly proxyOnly: boolean;
  /** Measured on the forwarding variants (PROXY_VARIANTS) or on the request handler (HANDLER_VARIANTS). */
  readonly on: 'forward' | 'handler';
  /** Ratios (×h or ×i) and the target are against this variant. */
  readonly ref: Reference;
  readonly target?: Target;
}

export function metricDefs(idle: readonly [number, number], concurrency: number, handlerConcurrency: number): MetricDef[] {
  const n = (x: number): string => x.toLocaleString('en-US');
  const fwd = { on: 'forward', ref: 'haproxy' } as const;
  const hnd = { on: 'handler', ref: 'inetd', proxyOnly: true } as const;
  return [
    { key: 'thrUp1', label: 'throughput, 1 stream client→server', unit: 'Gbit/s', digits: 2, proxyOnly: false, ...fwd, target: { op: '>=', factor: 1 } },
    { key: 'thrDown1', label: 'throughput, 1 stream server→client', unit: 'Gbit/s', digits: 2, proxyOnly: false, ...fwd, target: { op: '>=', factor: 1 } },
    { key: 'thrUp8', label: 'throughput, 8 streams client→server', unit: 'Gbit/s', digits: 2, proxyOnly: false, ...fwd },
    { key: 'gibMoved', label: 'data moved by the 3 throughput runs', unit: 'GiB', digits: 2, proxyOnly: false, ...fwd },
    {
      key: 'cpuPerGiB',
      label: 'proxy CPU per GiB (all throughput runs)',
      unit: 's/GiB',
      digits: 3,
      proxyOnly: true,
      ...fwd,
      target: { op: '<=', factor: 0.8, atLeastAsMuch: 'gibMoved' },
    },
    { key: 'connPerSec', label: `new connections/s (64 B echo, ${concurrency} in flight)`, unit: 'conn/s', digits: 0, proxyOnly: false, ...fwd, target: { op: '>=', factor: 1 } },
    { key: 'cpuUsPerConn', label: 'proxy CPU per connection', unit: 'µs', digits: 1, proxyOnly: true, ...fwd, target: { op: '<=', factor: 1 } },
    {
      key: 'handlerConnPerSec',
      label: `\`/bin/cat\` handler: connections/s (64 B echo, ${handlerConcurrency} in flight)`,
      unit: 'conn/s',
      digits: 0,
      ...hnd,
      target: { op: '>=', factor: 1 },
    },
    { key: 'handlerCpuUsPerConn', label: '`/bin/cat` handler: CPU per connection, handlers included', unit: 'µs', digits: 1, ...hnd },
    { key: 'rttP50', label: '64 B ping-pong RTT p50', unit: 'µs', digits: 1, proxyOnly: false, ...fwd, target: { op: '<=', factor: 1 } },
    { key: 'rttP99', label: '64 B ping-pong RTT p99', unit: 'µs', digits: 1, proxyOnly: false, ...fwd },
    { key: 'rss1', label: `RSS per idle connection @ ${n(idle[0])}`, unit: 'KiB', digits: 2, proxyOnly: true, ...fwd },
    { key: 'rss2', label: `RSS per idle connection @ ${n(idle[1])}`, unit: 'KiB', digits: 2, proxyOnly: true, ...fwd, target: { op: '<=', factor: 0.5 } },
  ];
}

/** Whether variant `v` measures metric `d`. */
export function measures(d: MetricDef, v: VariantName): boolean {
  if (d.proxyOnly && v === 'direct') return false;
  return (d.on === 'handler' ? HANDLER_VARIANTS : PROXY_VARIANTS).includes(v);
}

export interface Sample {
  readonly round: number;
  readonly value: number | null;
  readonly error?: string;
  readonly detail?: Record<string, unknown>;
}

export type Samples = Record<VariantName, Partial<Record<MetricKey, Sample[]>>>;

export function median(xs: readonly number[]): number | null {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

export function medianOf(samples: readonly Sample[] | undefined): { value: number | null; n: number } {
  const vals = (samples ?? []).map((s) => s.value).filter((v): v is number => v !== null && Number.isFinite(v));
  return { value: median(vals), n: vals.length };
}

export type Medians = Record<VariantName, Partial<Record<MetricKey, { value: number | null; n: number }>>>;

export function computeMedians(samples: Samples, variants: readonly VariantName[], defs: readonly MetricDef[]): Medians {
  const out = {} as Medians;
  for (const v of variants) {
    out[v] = {};
    for (const d of defs) out[v][d.key] = medianOf(samples[v][d.key]);
  }
  return out;
}

export interface TargetResult {
  readonly metric: MetricKey;
  readonly variant: VariantName;
  readonly target: string;
  readonly reference: Reference;
  /** The variant's median over the reference's. */
  readonly ratio: number | null;
  /** Target.atLeastAsMuch: that metric's ratio, which must be ≥ 1. */
  readonly alsoRatio?: number | null;
  readonly met: boolean | null;
}

function factorText(f: number): string {
  return `${f.toFixed(Number.isInteger(f * 10) ? 1 : 2)}×`;
}

export function targetText(d: MetricDef, t: Target): string {
  const also = t.atLeastAsMuch === undefined ? '' : `, at ≥ ${factorText(1)} its ${t.atLeastAsMuch === 'gibMoved' ? 'throughput' : t.atLeastAsMuch}`;
  return `${t.op === '>=' ? '≥' : '≤'} ${factorText(t.factor)} ${VARIANT_LABELS[d.ref]}${also}`;
}

function ratioOf(med: Medians, key: MetricKey, v: VariantName, ref: Reference): number | null {
  const x = med[v]?.[key]?.value ?? null;
  const r = med[ref]?.[key]?.value ?? null;
  return x !== null && r !== null && r !== 0 ? x / r : null;
}

export function evaluateTargets(defs: readonly MetricDef[], med: Medians, variants: readonly VariantName[]): TargetResult[] {
  const out: TargetResult[] = [];
  for (const d of defs) {
    if (!d.target || !variants.includes(d.ref)) continue;
    const t = d.target;
    for (const v of ['splice', 'base', 'js'] as const) {
      if (!variants.includes(v)) continue;
      const ratio = ratioOf(med, d.key, v, d.ref);
      let met = ratio === null ? null : t.op === '>=' ? ratio >= t.factor : ratio <= t.factor;
      let alsoRatio: number | null | undefined;
      if (t.atLeastAsMuch !== undefined) {
        alsoRatio = ratioOf(med, t.atLeastAsMuch, v, d.ref);
        met = met === null || alsoRatio === null ? null : met && alsoRatio >= 1;
      }
      out.push({
        metric: d.key,
        variant: v,
        target: targetText(d, t),
        reference: d.ref,
        ratio,
        ...(alsoRatio !== undefined ? { alsoRatio } : {}),
        met,
      });
    }
  }
  return out;
}

function fmt(x: number, digits: number): string {
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function markdownTable(
  defs: readonly MetricDef[],
  med: Medians,
  variants: readonly VariantName[],
  targets: readonly TargetResult[],
  rounds: number,
): string {
  const engines = (['splice', 'base', 'js'] as const).filter((v) => variants.includes(v));
  const hasRef = variants.includes('haproxy') || variants.includes('inetd');
  const hasD = variants.includes('direct');
  const head = ['metric', ...variants.map((v) => VARIANT_LABELS[v])];
  if (hasRef) head.push('target', ...engines.map((e) => `${VARIANT_LABELS[e]} meets it?`));
  const rows = [head, head.map(() => '---')];
  for (const d of defs) {
    if (!variants.some((v) => measures(d, v))) continue;
    const row = [`${d.label} (${d.unit})`];
    const suffix = REF_SUFFIX[d.ref];
    for (const v of variants) {
      const m = med[v][d.key];
      if (!measures(d, v)) {
        row.push('—');
        continue;
      }
      if (!m || m.value === null) {
        row.push('failed');
        continue;
      }
      const parts: string[] = [];
      const dv = med.direct?.[d.key]?.value ?? null;
      const rv = med[d.ref]?.[d.key]?.value ?? null;
      if (hasD && v !== 'direct' && !d.proxyOnly && dv) parts.push(`${fmt(m.value / dv, 2)}×d`);
      if (variants.includes(d.ref) && v !== d.ref && rv) parts.push(`${fmt(m.value / rv, 2)}×${suffix}`);
      const few = m.n < rounds ? ` (${m.n}/${rounds} ok)` : '';
      row.push(`${fmt(m.value, d.digits)}${parts.length ? ` (${parts.join(', ')})` : ''}${few}`);
    }
    if (hasRef) {
      row.push(d.target ? targetText(d, d.target) : '');
      for (const e of engines) {
        const t = targets.find((x) => x.metric === d.key && x.variant === e);
        if (!t) row.push(d.target ? `n/a (no ${VARIANT_LABELS[d.ref]})` : '');
        else if (t.met === null) row.push('n/a');
        else {
          const also = t.alsoRatio === undefined || t.alsoRatio === null ? '' : `; throughput ${fmt(t.alsoRatio, 2)}×${suffix}`;
          row.push(`${t.met ? 'yes' : '**NO**'} (${fmt(t.ratio as number, 2)}×${suffix}${also})`);
        }
      }
    }
    rows.push(row);
  }
  return rows.map((r) => `| ${r.join(' | ')} |`).join('\n');
}
