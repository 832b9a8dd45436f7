# interop.rtcctl: rtcctl (clients/cli) against the real rtc-auth, two
# rtc-signaling pods and a real redis-server; what it did is checked with
# Debian's python3-grpcio and its --json output with python3-protobuf.
# Included from tests/interop/CMakeLists.txt, which sets RTC_INTEROP_PYTHON
# (/usr/bin/python3: python3-grpcio, python3-protobuf, python3-cryptography).
#
# Needs on PATH: redis-server (apt-get install redis-server). A missing tool
# fails the test with the package to install; nothing is skipped.
if(NOT RTC_INTEROP_PYTHON)
  set(RTC_INTEROP_PYTHON /usr/bin/python3)
endif()

# rtcctl, rtc-auth and rtc-signaling all land in build/bin.
add_test(NAME interop.rtcctl
  COMMAND ${CMAKE_COMMAND} -E env
          RTC_PROTOC=${PROTOC}
          PYTHONDONTWRITEBYTECODE=1
          ${RTC_INTEROP_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_rtcctl.py
          $<TARGET_FILE_DIR:rtcctl> ${CMAKE_SOURCE_DIR} --suite=rtcctl -v)
set_tests_properties(interop.rtcctl PROPERTIES LABELS interop TIMEOUT 600)
