# interop.signaling and interop.signaling_ha: the real rtc-signaling (two
# pods) with a real rtc-auth and a real redis-server, driven by Debian's
# python3-grpcio; the HA suite adds pod kills and a Sentinel failover (a
# replica and three redis-sentinels). Included from
# tests/interop/CMakeLists.txt, which sets RTC_INTEROP_PYTHON
# (/usr/bin/python3: python3-grpcio, python3-protobuf, python3-cryptography).
#
# Needs on PATH: redis-server, redis-sentinel and openssl (apt-get install
# redis-server redis-sentinel openssl). A missing tool fails the test with
# the package to install; nothing is skipped.
if(NOT RTC_INTEROP_PYTHON)
  set(RTC_INTEROP_PYTHON /usr/bin/python3)
endif()

foreach(suite signaling signaling_ha)
  add_test(NAME interop.${suite}
    COMMAND ${CMAKE_COMMAND} -E env
            RTC_PROTOC=${PROTOC}
            PYTHONDONTWRITEBYTECODE=1
            ${RTC_INTEROP_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_signaling.py
            $<TARGET_FILE_DIR:rtc-signaling> ${CMAKE_SOURCE_DIR} --suite=${suite} -v)
  set_tests_properties(interop.${suite} PROPERTIES LABELS interop TIMEOUT 900)
endforeach()
