/**
 * Metrics, medians and the markdown table: one row per metric, one column
 * per variant with its ratio to direct and to haproxy, then the target and
 * whether each tcpproxy engine meets it.
 */
import type { VariantName } from './variants';
import { VARIANT_LABELS } from './variants';

export type MetricKey =
  | 'thrUp1'
  | 'thrDown1'
  | 'thrUp8'
  | 'cpuPerGiB'
  | 'connPerSec'
  | 'cpuUsPerConn'
  | 'rttP50'
  | 'rttP99'
  | 'rss1'
  | 'rss2';

export interface Target {
  /** `>=`: the proxy's value must be at least factor × haproxy's; `<=`: at most. */
  readonly op: '>=' | '<=';
  readonly factor: number;
}

export interface MetricDef {
  readonly key: MetricKey;
  readonly label: string;
  readonly unit: string;
  readonly digits: number;
  /** Has a value only with a proxy (CPU and memory of the proxy). */
  readonly proxyOnly: boolean;
  readonly target?: Target;
}

export function metricDefs(idle: readonly [number, number]): MetricDef[] {
  const n = (x: number): string => x.toLocaleString('en-US');
  return [
    { key: 'thrUp1', label: 'throughput, 1 stream client→server', unit: 'Gbit/s', digits: 2, proxyOnly: false, target: { op: '>=', factor: 1 } },
    { key: 'thrDown1', label: 'throughput, 1 stream server→client', unit: 'Gbit/s', digits: 2, proxyOnly: false, target: { op: '>=', factor: 1 } },
    { key: 'thrUp8', label: 'throughput, 8 streams client→server', unit: 'Gbit/s', digits: 2, proxyOnly: false },
    { key: 'cpuPerGiB', label: 'proxy CPU per GiB (all throughput runs)', unit: 's/GiB', digits: 3, proxyOnly: true, target: { op: '<=', factor: 0.9 } },
    { key: 'connPerSec', label: 'new connections/s (64 B echo, 16 in flight)', unit: 'conn/s', digits: 0, proxyOnly: false, target: { op: '>=', factor: 0.95 } },
    { key: 'cpuUsPerConn', label: 'proxy CPU per connection', unit: 'µs', digits: 1, proxyOnly: true },
    { key: 'rttP50', label: '64 B ping-pong RTT p50', unit: 'µs', digits: 1, proxyOnly: false, target: { op: '<=', factor: 1 } },
    { key: 'rttP99', label: '64 B ping-pong RTT p99', unit: 'µs', digits: 1, proxyOnly: false },
    { key: 'rss1', label: `RSS per idle connection @ ${n(idle[0])}`, unit: 'KiB', digits: 2, proxyOnly: true, target: { op: '<=', factor: 1 } },
    { key: 'rss2', label: `RSS per idle connection @ ${n(idle[1])}`, unit: 'KiB', digits: 2, proxyOnly: true, target: { op: '<=', factor: 1 } },
  ];
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
  readonly ratioToHaproxy: number | null;
  readonly met: boolean | null;
}

function targetText(t: Target): string {
  return `${t.op === '>=' ? '≥' : '≤'} ${t.factor === 1 ? '' : `${t.factor}× `}haproxy`;
}

export function evaluateTargets(defs: readonly MetricDef[], med: Medians, variants: readonly VariantName[]): TargetResult[] {
  const out: TargetResult[] = [];
  if (!variants.includes('haproxy')) return out;
  for (const d of defs) {
    if (!d.target) continue;
    for (const v of ['splice', 'js'] as const) {
      if (!variants.includes(v)) continue;
      const x = med[v][d.key]?.value ?? null;
      const h = med.haproxy[d.key]?.value ?? null;
      const ratio = x !== null && h !== null && h !== 0 ? x / h : null;
      const met = ratio === null ? null : d.target.op === '>=' ? ratio >= d.target.factor : ratio <= d.target.factor;
      out.push({ metric: d.key, variant: v, target: targetText(d.target), ratioToHaproxy: ratio, met });
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
  const engines = (['splice', 'js'] as const).filter((v) => variants.includes(v));
  const hasH = variants.includes('haproxy');
  const hasD = variants.includes('direct');
  const head = ['metric', ...variants.map((v) => VARIANT_LABELS[v])];
  if (hasH) head.push('target', ...engines.map((e) => `${VARIANT_LABELS[e]} meets it?`));
  const rows = [head, head.map(() => '---')];
  for (const d of defs) {
    const row = [`${d.label} (${d.unit})`];
    for (const v of variants) {
      const m = med[v][d.key];
      if (d.proxyOnly && v === 'direct') {
        row.push('—');
        continue;
      }
      if (!m || m.value === null) {
        row.push('failed');
        continue;
      }
      const parts: string[] = [];
      const dv = med.direct?.[d.key]?.value ?? null;
      const hv = med.haproxy?.[d.key]?.value ?? null;
      if (hasD && v !== 'direct' && !d.proxyOnly && dv) parts.push(`${fmt(m.value / dv, 2)}×d`);
      if (hasH && v !== 'haproxy' && hv) parts.push(`${fmt(m.value / hv, 2)}×h`);
      const few = m.n < rounds ? ` (${m.n}/${rounds} ok)` : '';
      row.push(`${fmt(m.value, d.digits)}${parts.length ? ` (${parts.join(', ')})` : ''}${few}`);
    }
    if (hasH) {
      row.push(d.target ? targetText(d.target) : '');
      for (const e of engines) {
        const t = targets.find((x) => x.metric === d.key && x.variant === e);
        if (!t) row.push('');
        else if (t.met === null) row.push('n/a');
        else row.push(`${t.met ? 'yes' : '**NO**'} (${fmt(t.ratioToHaproxy as number, 2)}×h)`);
      }
    }
    rows.push(row);
  }
  return rows.map((r) => `| ${r.join(' | ')} |`).join('\n');
}
