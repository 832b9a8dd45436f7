# deploy.topology: the whole local topology (deploy/local/up.sh: Redis
# primary + replica + 3 Sentinels with ACL users, rtc-auth, two signaling
# pods, two bridges, coturn, the nginx edge) started inside a fresh network
# namespace (unshare -n; needs root or unprivileged user namespaces) and
# checked end to end through the edge: TLS versions, routes and headers, a
# call across both bridges, loopback-only internal ports, the upgrade rate
# limit (429), kill -9 of a bridge and of the Redis primary (Sentinel
# failover, recovery time printed). Include from tests/deploy/CMakeLists.txt:
#   include(${CMAKE_CURRENT_LIST_DIR}/topology.cmake)
# Needs (up.sh apt-get installs them as root): nginx, coturn, redis-server,
# redis-sentinel, redis-tools, openssl, curl, python3-grpcio,
# python3-websockets.
add_test(NAME deploy.topology
  COMMAND ${CMAKE_COMMAND} -E env PYTHONDONTWRITEBYTECODE=1
          /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_topology.py
          $<TARGET_FILE_DIR:rtc-bridge> ${CMAKE_SOURCE_DIR} -v)
set_tests_properties(deploy.topology PROPERTIES LABELS deploy TIMEOUT 900
  RUN_SERIAL TRUE)
