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

#endif
