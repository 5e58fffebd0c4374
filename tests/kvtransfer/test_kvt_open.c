/* test_kvt_open.c: choosing a transport with kvt_open on a machine without RDMA hardware.
 *
 * The CI host has no verbs device (its kernel has no RDMA), which is exactly the case the
 * workers' --kv-transport flag must handle: auto falls back to TCP and says why, an
 * explicit rdma fails at start with a line that tells the user what to do, tcp is tcp.
 * (With a device, kvt_open is covered by the tests/rdma VM tests.) */
#include <string.h>

#include "kvt_util.h"

int main(void)
{
    eng_error err;
    kvt_transport *t = NULL;
    char dev[64], why[200];
    if (kvt_rdma_probe(dev, sizeof dev, why, sizeof why)) {
        printf("test_kvt_open: this machine has RDMA device %s; only the tcp cases run\n", dev);
    } else {
        CHECK_OK(kvt_open("auto", NULL, &t, &err), &err);
        CHECK(strcmp(kvt_name(t), "tcp") == 0);
        CHECK(strncmp(kvt_choice(t), "tcp (auto: ", 11) == 0);
        printf("auto -> %s\n", kvt_choice(t));
        kvt_destroy(t);

        t = NULL;
        CHECK(kvt_open("rdma", NULL, &t, &err) == -1 && t == NULL);
        printf("rdma -> %s\n", err.msg);
        CHECK(strstr(err.msg, "use --kv-transport tcp or auto"));
        CHECK(strstr(err.msg, "no RDMA device found (ibv_get_device_list returned none)") ||
              strstr(err.msg, "RDMA support was not built"));
    }
    CHECK_OK(kvt_open("tcp", NULL, &t, &err), &err);
    CHECK(strcmp(kvt_name(t), "tcp") == 0 && strcmp(kvt_choice(t), "tcp (asked for)") == 0);
    kvt_destroy(t);

    kvt_open_options o = {.tcp = {.advertise_host = "0.0.0.0"}};
    CHECK(kvt_open("tcp", &o, &t, &err) == -1); /* the TCP options are passed through */
    CHECK(kvt_open("infiniband", NULL, &t, &err) == -1 && strstr(err.msg, "unknown transport"));
    printf("test_kvt_open ok\n");
    return 0;
}
