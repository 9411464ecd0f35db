/** Live sessions get this long to finish when tcpproxy stops or a reload retires their worker. */
export const GRACE_MS = 10_000;
