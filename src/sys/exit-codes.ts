/** Exit status of tcpproxy, documented under EXIT STATUS in man/tcpproxy.1. */
export const EXIT_OK = 0;
/** A runtime failure at start: bind, pidfile, no service for an inetd connection. */
export const EXIT_FAILURE = 1;
/** Usage or configuration error. */
export const EXIT_USAGE = 2;
/** The native addon cannot be loaded, or a bug: an exception that is none of ours. */
export const EXIT_SOFTWARE = 70;
