/**
 * A service manager's end of sd_notify(3) for tests: a test-owned AF_UNIX
 * datagram socket (python3, since Node has none) whose datagrams are kept.
 */
import { launch, type Launched } from './daemon';
import { until } from './until';

/** Binds argv[1] ('@name': abstract) and prints each datagram as a JSON string on a line; `bound` first. */
const RECEIVER = `
import json, socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + name[1:] if name.startswith('@') else name)
print('bound', flush=True)
while True:
    print(json.dumps(s.recv(65536).decode()), flush=True)
`;

export interface Receiver {
  readonly proc: Launched;
  /** The datagrams so far, each as its KEY=VALUE lines. */
  messages(): string[][];
}

export async function receiver(name: string): Promise<Receiver> {
  const proc = launch(['python3', '-c', RECEIVER, name], { detached: true });
  await until(() => proc.stdout().startsWith('bound\n') || proc.exit() !== null, () => `the receiver to bind ${name}: ${proc.stderr()}`, 10000);
  if (proc.exit() !== null) throw new Error(`receiver exited: ${proc.stderr()}`);
  return {
    proc,
    messages: () =>
      proc
        .stdout()
        .split('\n')
        .slice(1)
        .filter((l) => l !== '')
        .map((l) => (JSON.parse(l) as string).split('\n').filter((f) => f !== '')),
  };
}

