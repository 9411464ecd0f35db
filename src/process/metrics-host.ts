/**
 * The master's side of the metrics process (metrics.ts): forks it with the
 * metrics listener as fd 4, tells it the ids to drop to, answers its
 * scrapes with a snapshot, and restarts it with backoff when it dies. The
 * master trusts it no more than a worker: its channel is bounded
 * (channel.ts), and anything but `ready` once and `scrape` with a request
 * number, or scrapes faster than MAX_SCRAPES a second, kills it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { guardChannel } from './channel';
import { processProgram } from './program';
import type { MetricsSnapshot, ToMetrics } from './metrics';
import type { Identity } from './privilege';
import type { Logger } from '../sys/log';

const PROGRAM = processProgram('metrics.js');

/**
 * Questions a second beyond which the process is out of control: it shares
 * one question among its clients for 100 ms (metrics.ts), so it asks about
 * ten times a second however hard it is scraped.
 */
const MAX_SCRAPES = 50;
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 10_000;

export class MetricsHost {
  private child: ChildProcess | null = null;
  private stopped = false;
  private backoffMs = BACKOFF_FIRST_MS;
  private timer: NodeJS.Timeout | null = null;
  private readonly fd: number;
  private readonly expect: Identity | null;
  private readonly snapshot: () => Promise<MetricsSnapshot>;
  private readonly log: Logger;
  private readonly label: string;

  constructor(opts: { fd: number; key: string; expect: Identity | null; snapshot: () => Promise<MetricsSnapshot>; log: Logger }) {
    this.fd = opts.fd;
    this.expect = opts.expect;
    this.snapshot = opts.snapshot;
    this.log = opts.log;
    this.label = `metrics on ${opts.key}`;
  }

  start(): void {
    if (this.stopped) return;
    const child = fork(PROGRAM, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc', this.fd], execArgv: [] });
    this.child = child;
    const startedAt = Date.now();
    let refused = false;
    let ready = false;
    let scrapes = 0;
    let second = 0;
    const refuse = (why: string): void => {
      if (refused) return;
      refused = true;
      this.log.error(`${this.label} (pid ${child.pid ?? '?'}): ${why}: killing it`);
      child.kill('SIGKILL');
      if (child.connected) child.disconnect();
    };
    guardChannel(child, refuse);
    child.on('error', (err) => this.log.error(`${this.label}: ${err.message}`));
    child.on('message', (m: unknown, handle: unknown) => {
      if (handle !== undefined && handle !== null) {
        (handle as { close?: () => void }).close?.();
        return refuse('passed a descriptor');
      }
      if (refused) return;
      const o = m !== null && typeof m === 'object' && !Array.isArray(m) ? (m as Record<string, unknown>) : null;
      const keys = o === null ? '' : Object.keys(o).sort().join(',');
      if (o?.['type'] === 'ready' && keys === 'type' && !ready) {
        ready = true;
        this.log.info(`${this.label} ready, pid ${child.pid ?? '?'}`);
        return;
      }
      const req = o?.['req'];
      if (o?.['type'] !== 'scrape' || keys !== 'req,type' || typeof req !== 'number' || !Number.isSafeInteger(req) || req < 0) {
        return refuse('sent an invalid message');
      }
      const now = Math.floor(Date.now() / 1000);
      if (now !== second) {
        second = now;
        scrapes = 0;
      }
      if (++scrapes > MAX_SCRAPES) return refuse(`asked for more than ${MAX_SCRAPES} snapshots in a second`);
      this.snapshot().then(
        (snapshot) => {
          if (child.connected) child.send({ type: 'snapshot', req, snapshot } satisfies ToMetrics);
        },
        (err: unknown) => {
          this.log.error(`${this.label}: no snapshot: ${(err as Error).message}`);
          if (child.connected) child.send({ type: 'snapshot', req, snapshot: null } satisfies ToMetrics);
        },
      );
    });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      if (this.stopped) return;
      if (Date.now() - startedAt >= 10_000) this.backoffMs = BACKOFF_FIRST_MS;
      this.log.error(`${this.label} (pid ${child.pid ?? '?'}) ended with ${signal !== null ? `signal ${signal}` : `exit ${code ?? '?'}`}; restarting in ${this.backoffMs} ms`);
      this.timer = setTimeout(() => {
        this.timer = null;
        this.start();
      }, this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    });
    child.send({ type: 'init', fd: 4, expect: this.expect } satisfies ToMetrics);
  }

  /** Ends the process (it holds no session: nothing to drain). */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.child?.kill('SIGTERM');
  }
}
