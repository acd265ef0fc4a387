/*
 * A plain Lua 5.1 interpreter with the two libraries Redis gives its scripts that Sluice's use
 * (cmsgpack, struct), for profile.lua: it runs Sluice's function library over a mock Redis and
 * counts Lua bytecodes per function and line (BENCHMARKS.md, section 6.5). Built against the Lua
 * of a Redis source tree (deps/lua, after `make` there), so the interpreter and libraries are
 * the ones Redis embeds:
 *
 *     gcc -O2 -I$REDIS/deps/lua/src host.c $REDIS/deps/lua/src/liblua.a -lm -o lua-host
 *     ./lua-host profile.lua ../../server/src/backend/redis 1000
 */
#include <stdio.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

int luaopen_cmsgpack(lua_State *L);
int luaopen_struct(lua_State *L);

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args...]\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaopen_cmsgpack(L);
  lua_setglobal(L, "cmsgpack");
  luaopen_struct(L);
  lua_setglobal(L, "struct");
  lua_newtable(L);
  for (int i = 2; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  if (luaL_dofile(L, argv[1])) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  return 0;
}
