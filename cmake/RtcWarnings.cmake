# Warnings and sanitizers live on INTERFACE targets that every first-party
# target links; nothing is set globally.
add_library(rtc_warnings INTERFACE)
target_compile_options(rtc_warnings INTERFACE
  -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes
  -Wformat=2 -Wno-unused-parameter -Wvla -Wimplicit-fallthrough
  $<$<BOOL:${RTC_WERROR}>:-Werror>)
target_compile_definitions(rtc_warnings INTERFACE _GNU_SOURCE)

add_library(rtc_sanitize INTERFACE)
if(RTC_SANITIZE)
  target_compile_options(rtc_sanitize INTERFACE
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(rtc_sanitize INTERFACE -fsanitize=address,undefined)
endif()
# In the fuzz build the code under test lives in the libraries, not in the
# fuzz_*.c drivers: every first-party target gets libFuzzer's coverage
# instrumentation and the sanitizers, or the fuzzer would run blind.
if(RTC_FUZZ)
  target_compile_options(rtc_sanitize INTERFACE
    -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  target_link_options(rtc_sanitize INTERFACE -fsanitize=address,undefined)
endif()
target_link_libraries(rtc_warnings INTERFACE rtc_sanitize)

# rtc_fuzz_target(name SOURCES ... LIBS ...): a libFuzzer binary.
function(rtc_fuzz_target name)
  cmake_parse_arguments(F "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${F_SOURCES})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE ${F_LIBS} rtc_warnings)
endfunction()
