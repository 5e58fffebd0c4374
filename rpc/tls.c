/* tls.c: mutual TLS for every gRPC server and channel of the process (rpc.h,
 * rpc_tls_configure). Set once before any server or channel exists and never
 * changed after, so the PEM texts need no lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include "rpc_internal.h"

static char *ca_pem, *cert_pem, *key_pem;

/* The whole file as a NUL-terminated string, or NULL with st set. */
static char *read_pem(const char *path, rpc_status *st)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 && n <= (1 << 20) &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
        fclose(f);
        if (strstr(buf, "-----BEGIN "))
            return buf;
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "%s is not a PEM file", path);
    } else {
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "cannot read %s (or larger than 1 MiB)", path);
        if (f)
            fclose(f);
    }
    free(buf);
    return NULL;
}

int rpc_tls_configure(const char *ca_file, const char *cert_file, const char *key_file, rpc_status *st)
{
    if (!ca_file && !cert_file && !key_file)
        return rpc_status_set(st, RPC_OK, "%s", "");
    if (!ca_file || !cert_file || !key_file)
        return rpc_status_set(st, RPC_INVALID_ARGUMENT,
                              "mutual TLS needs all three: the CA, this process's certificate and its key");
    char *ca = read_pem(ca_file, st), *cert = ca ? read_pem(cert_file, st) : NULL,
         *key = cert ? read_pem(key_file, st) : NULL;
    if (!key) {
        free(ca), free(cert);
        return -1;
    }
    ca_pem = ca, cert_pem = cert, key_pem = key;
    return rpc_status_set(st, RPC_OK, "%s", "");
}

grpc_server_credentials *rpc_server_credentials(void)
{
    if (!ca_pem)
        return grpc_insecure_server_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {key_pem, cert_pem};
    return grpc_ssl_server_credentials_create_ex(ca_pem, &pair, 1,
                                                 GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
}

grpc_channel_credentials *rpc_channel_credentials(void)
{
    if (!ca_pem)
        return grpc_insecure_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {key_pem, cert_pem};
    return grpc_ssl_credentials_create(ca_pem, &pair, NULL, NULL);
}
