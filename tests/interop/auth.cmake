# interop.auth and interop.turn: the real rtc-auth against PyJWT,
# python3-cryptography, a real redis-server and a real coturn (turnserver,
# turnutils_uclient). Included from tests/interop/CMakeLists.txt, which sets
# RTC_INTEROP_PYTHON (/usr/bin/python3: Debian's python3-grpcio,
# python3-protobuf, python3-jwt, python3-cryptography).
#
# Needs on PATH: openssl, redis-server, turnserver and turnutils_uclient
# (apt-get install openssl redis-server coturn). A missing tool fails the test
# with the package to install; nothing is skipped.
if(NOT RTC_INTEROP_PYTHON)
  set(RTC_INTEROP_PYTHON /usr/bin/python3)
endif()

foreach(suite auth turn)
  add_test(NAME interop.${suite}
    COMMAND ${CMAKE_COMMAND} -E env
            RTC_PROTOC=${PROTOC}
            PYTHONDONTWRITEBYTECODE=1
            ${RTC_INTEROP_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_auth.py
            $<TARGET_FILE_DIR:rtc-auth> ${CMAKE_SOURCE_DIR} --suite=${suite} -v)
  set_tests_properties(interop.${suite} PROPERTIES LABELS interop TIMEOUT 600)
endforeach()
