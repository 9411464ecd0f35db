/**
 * Handler and ACP programs are checked once, at start: a relative path is
 * resolved against the directory tcpproxy was started in, a bare name is
 * searched for in PROGRAM_PATH (never the caller's PATH: a root daemon must
 * not run whatever a directory of someone else's PATH holds), and a program
 * that is missing or not executable is a configuration error at the line
 * that names it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ConfigError } from '../sys/errors';
import { splitCommand, type Origin, type Service } from './service';
import { quote } from '../sys/text';

/** Where bare program names are searched for: fixed, root's usual directories only. */
export const PROGRAM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function executable(file: string): string | null {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return 'is not a regular file';
    fs.accessSync(file, fs.constants.X_OK);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not executable' : `cannot be used (${code ?? 'error'})`;
  }
}

/** Absolute path of a program name, or an error text. */
export function resolveProgram(name: string, cwd: string, searchPath: string): { file: string } | { error: string } {
  if (name.includes('/')) {
    const file = path.resolve(cwd, name);
    const problem = executable(file);
    return problem === null ? { file } : { error: `program ${quote(name)} ${problem}` };
  }
  for (const dir of searchPath.split(':').filter((d) => d !== '')) {
    const file = path.resolve(cwd, dir, name);
    if (executable(file) === null) return { file };
  }
  return { error: `program ${quote(name)} not found in ${searchPath}` };
}

/** One message per program and line, however many services or lines share it. */
function dedupe(errors: readonly ConfigError[]): ConfigError[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    const k = `${e.file} ${e.line} ${e.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * The errors of the programs the lines of `file` name (`exec`, `acp`), as
 * resolvePrograms gives them; for a file with syntax errors, which has no
 * services to resolve, so that both kinds are reported in one run.
 */
export function checkProgramLines(
  lines: readonly { readonly line: number; readonly argv: readonly string[]; readonly acp: boolean }[],
  file: string,
  cwd: string,
  searchPath: string,
): ConfigError[] {
  const errors: ConfigError[] = [];
  for (const l of lines) {
    const r = resolveProgram(l.argv[0] ?? '', cwd, searchPath);
    if ('error' in r) errors.push({ file, line: l.line, message: l.acp ? `acp: ${r.error}` : r.error });
  }
  return dedupe(errors);
}

/** The services with absolute program paths, or the errors found. */
export function resolvePrograms(
  services: readonly Service[],
  cwd: string,
  searchPath: string,
): { services: Service[]; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  const out = services.map((s): Service => {
    let next: Service = s;
    const at = (where: Origin, message: string): void => {
      errors.push({ file: where.file, line: where.line, message });
    };
    if (s.target.kind === 'exec') {
      const [prog, ...args] = s.target.argv;
      const r = resolveProgram(prog ?? '', cwd, searchPath);
      if ('error' in r) at(s.targetOrigin ?? s.origin, r.error);
      else next = { ...next, target: { kind: 'exec', argv: [r.file, ...args] } };
    }
    if (s.acp !== null) {
      const [prog, ...args] = splitCommand(s.acp);
      const r = resolveProgram(prog ?? '', cwd, searchPath);
      if ('error' in r) at(s.acpOrigin ?? s.origin, `acp: ${r.error}`);
      else next = { ...next, acp: [r.file, ...args].join(' ') };
    }
    return next;
  });
  return { services: out, errors: dedupe(errors) };
}
