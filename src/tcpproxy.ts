#!/usr/bin/env node
/** The `tcpproxy` command. Anything thrown that is not ours is a bug: stack trace, exit 70. */
import { EXIT_SOFTWARE } from './sys/exit-codes';
import { main } from './main';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Listening sockets are closed; lingering sessions must not keep a stopped daemon alive.
    setImmediate(() => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(`tcpproxy: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT_SOFTWARE);
  },
);
