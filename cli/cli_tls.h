/* cli_tls.h: --rpc-tls-ca, --rpc-tls-cert and --rpc-tls-key, the same rows in every
 * command that speaks gRPC (coordinator, worker, tandemctl): mutual TLS between the
 * cluster's processes (rpc.h, rpc_tls_configure; docs/security.md). Header-only, so
 * that tandemctl, which links no more than the parser, can use it. */
#ifndef CLI_TLS_H
#define CLI_TLS_H

#include <stdio.h>

#include "cli_args.h"
#include "rpc.h"

typedef struct cli_tls_opts {
    const char *ca, *cert, *key;
} cli_tls_opts;

/* The rows for the cli_tls_opts member m of struct st. */
#define CLI_TLS_OPTS(st, m)                                                                                \
    CLI_STR_OPT(st, m.ca, "--rpc-tls-ca", "F", NULL,                                                       \
                "PEM CA that signs every cluster process's certificate: gRPC\n"                            \
                "then runs over mutual TLS (all three --rpc-tls-* together)",                              \
                0),                                                                                        \
        CLI_STR_OPT(st, m.cert, "--rpc-tls-cert", "F", NULL, "PEM certificate of this process (gRPC)", 0), \
        CLI_STR_OPT(st, m.key, "--rpc-tls-key", "F", NULL, "PEM private key of --rpc-tls-cert", 0)

/* Configures gRPC's TLS from the options; CLI_RUN, or the exit status after a message. */
static inline int cli_tls_apply(const cli_command *cmd, const cli_tls_opts *o)
{
    rpc_status st;
    if (rpc_tls_configure(o->ca, o->cert, o->key, &st) < 0) {
        fprintf(stderr, "%s: %s\n", cmd->name, st.msg);
        return 2;
    }
    return CLI_RUN;
}

#endif
