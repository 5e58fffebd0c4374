/* admin.h: the Admin service (admin.c), inside the coordinator.
 *
 * Registered on the coordinator's rpc_server before it starts; the returned handle is
 * freed after the server stopped. */
#ifndef COORD_ADMIN_H
#define COORD_ADMIN_H

#include "registry.h"
#include "router.h"
#include "rpc.h"

typedef struct coord_admin coord_admin;

int coord_admin_serve(rpc_server *s, coord_registry *reg, coord_router *router, const char *model, coord_admin **out,
                      rpc_status *st);
void coord_admin_free(coord_admin *a);

/* One of the coordinator's effective settings, as Admin.Config shows it. */
typedef struct coord_setting {
    char key[32];
    char value[256];
} coord_setting;

enum { COORD_MAX_SETTINGS = 32 };

/* What Admin.Config answers for the coordinator (at most COORD_MAX_SETTINGS; the
 * log level and format are added as they are at the time of the call). */
void coord_admin_set_settings(coord_admin *a, const coord_setting *s, int n);

#endif
