# interop.client_vs_grpcio: rtc's gRPC client (rtc_grpc_channel) against
# grpcio_server.py on Debian's python3-grpcio. Included from CMakeLists.txt
# (which sets RTC_INTEROP_PYTHON).
if(NOT RTC_INTEROP_PYTHON)
  set(RTC_INTEROP_PYTHON /usr/bin/python3)
endif()

add_executable(client_vs_grpcio ${CMAKE_CURRENT_LIST_DIR}/client_vs_grpcio.c)
target_link_libraries(client_vs_grpcio PRIVATE rtc_grpc rtc_core rtc_proto PkgConfig::CMOCKA
  rtc_warnings)

add_test(NAME interop.client_vs_grpcio COMMAND client_vs_grpcio)
set_tests_properties(interop.client_vs_grpcio PROPERTIES
  LABELS interop
  TIMEOUT 300
  ENVIRONMENT "RTC_GRPCIO_SERVER=${CMAKE_CURRENT_LIST_DIR}/grpcio_server.py;RTC_INTEROP_PYTHON=${RTC_INTEROP_PYTHON}")
