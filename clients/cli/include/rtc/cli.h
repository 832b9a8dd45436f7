/* rtc/cli.h — rtcctl, the command-line internal caller of rtc-auth and
 * rtc-signaling.
 *
 * One invocation is one command (`rtcctl room create demo`): its flags are
 * parsed with rtc/config.h (so every flag is also an RTC_* environment
 * variable), then the command runs as one run of a private libuv loop over
 * rtc_grpc channels, every call under a deadline, and the process exits
 * with a status that says what kind of failure happened (below), so
 * scripts can branch on it without parsing messages. */
#ifndef RTC_CLI_H
#define RTC_CLI_H

#include <stdio.h>

/* Exit statuses: the contract with scripts (also in `rtcctl --help` and
 * clients/cli/README.md). */
enum {
    RTC_CLI_EXIT_OK = 0,
    RTC_CLI_EXIT_FAILURE = 1,     /* anything not listed below */
    RTC_CLI_EXIT_USAGE = 2,       /* bad flags, arguments or configuration */
    RTC_CLI_EXIT_UNREACHABLE = 3, /* UNAVAILABLE, DEADLINE_EXCEEDED, connection refused */
    RTC_CLI_EXIT_NOT_FOUND = 4,   /* NOT_FOUND */
    RTC_CLI_EXIT_CONFLICT = 5,    /* ALREADY_EXISTS, FAILED_PRECONDITION */
    RTC_CLI_EXIT_DENIED = 6,      /* UNAUTHENTICATED, PERMISSION_DENIED; `token verify`: refused */
    RTC_CLI_EXIT_NOT_SERVING = 7, /* `health`: some service is not SERVING */
    RTC_CLI_EXIT_INVALID = 8,     /* INVALID_ARGUMENT */
};

/* The exit status for a final gRPC status code (0 for OK). */
int rtc_cli_exit_status(int grpc_status);

/* Run one rtcctl command line. Results go to out, errors (one line each,
 * `rtcctl: <what failed>: <STATUS_NAME>: <grpc-message>`) and logs to err.
 * envp: the environment for RTC_* settings (NULL = environ). Returns the
 * exit status. Secrets (API key, tokens given on the command line) are
 * never written to out or err. Installs SIGINT/SIGTERM watchers while a
 * command runs (`watch` leaves its room on the first one). */
int rtc_cli_main(int argc, char **argv, char **envp, FILE *out, FILE *err);

#endif
