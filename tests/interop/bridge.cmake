# interop.bridge and interop.bridge_ha: the real rtc-bridge between
# browser-like WebSocket clients (Debian's python3-websockets, and raw
# sockets for what a library will not send) and the real services: rtc-auth
# (--dev), two rtc-signaling pods and a redis-server. bridge_ha adds the
# slow cases: kill -9 of the signaling pods under load (stream resume) and
# the drain on SIGTERM. Included from tests/interop/CMakeLists.txt, which
# sets RTC_INTEROP_PYTHON (/usr/bin/python3: python3-websockets,
# python3-grpcio, python3-cryptography).
#
# Needs on PATH: redis-server (apt-get install redis-server). A missing
# tool fails the test with the package to install; nothing is skipped.
if(NOT RTC_INTEROP_PYTHON)
  set(RTC_INTEROP_PYTHON /usr/bin/python3)
endif()

foreach(suite bridge bridge_ha)
  add_test(NAME interop.${suite}
    COMMAND ${CMAKE_COMMAND} -E env
            PYTHONDONTWRITEBYTECODE=1
            ${RTC_INTEROP_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_bridge.py
            $<TARGET_FILE_DIR:rtc-bridge> ${CMAKE_SOURCE_DIR} --suite=${suite} -v)
  set_tests_properties(interop.${suite} PROPERTIES LABELS interop TIMEOUT 900)
endforeach()
