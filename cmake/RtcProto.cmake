# rtc_proto_library(<target> ROOT <dir> PROTOS <rel.proto>... [FDS_SYMBOL <name>])
#
# Generates protobuf-c sources for each .proto (paths relative to ROOT) into
# the build tree and builds them as a static library. With FDS_SYMBOL, also
# writes a FileDescriptorSet (--include_imports --include_source_info) to
# ${CMAKE_BINARY_DIR}/<target>.fds and compiles it into the library as
#   const uint8_t <FDS_SYMBOL>[]; const size_t <FDS_SYMBOL>_len;
# for code that needs what protoc-c descriptors lack (json names, streaming
# flags, comments).
function(rtc_proto_library target)
  cmake_parse_arguments(P "" "ROOT;FDS_SYMBOL" "PROTOS;DEPENDS_ROOTS" ${ARGN})
  set(gen ${CMAKE_BINARY_DIR}/gen/${target})
  file(MAKE_DIRECTORY ${gen})
  set(includes -I${P_ROOT})
  foreach(r ${P_DEPENDS_ROOTS})
    list(APPEND includes -I${r})
  endforeach()
  set(srcs)
  set(abs)
  foreach(p ${P_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" base ${p})
    list(APPEND srcs ${gen}/${base}.pb-c.c)
    list(APPEND abs ${P_ROOT}/${p})
    add_custom_command(
      OUTPUT ${gen}/${base}.pb-c.c ${gen}/${base}.pb-c.h
      COMMAND ${PROTOC_C} ${includes} --c_out=${gen} ${P_ROOT}/${p}
      DEPENDS ${P_ROOT}/${p}
      COMMENT "protoc-c ${p}"
      VERBATIM)
  endforeach()
  if(P_FDS_SYMBOL)
    set(fds ${CMAKE_BINARY_DIR}/${target}.fds)
    add_custom_command(
      OUTPUT ${fds}
      COMMAND ${PROTOC} ${includes} --include_imports --include_source_info
              --descriptor_set_out=${fds} ${abs}
      DEPENDS ${abs}
      COMMENT "FileDescriptorSet ${target}.fds"
      VERBATIM)
    add_custom_command(
      OUTPUT ${gen}/${target}_fds.c
      COMMAND ${CMAKE_COMMAND} -DIN=${fds} -DOUT=${gen}/${target}_fds.c -DSYMBOL=${P_FDS_SYMBOL}
              -P ${CMAKE_SOURCE_DIR}/cmake/EmbedFile.cmake
      DEPENDS ${fds} ${CMAKE_SOURCE_DIR}/cmake/EmbedFile.cmake
      COMMENT "Embedding ${target}.fds"
      VERBATIM)
    list(APPEND srcs ${gen}/${target}_fds.c)
  endif()
  add_library(${target} STATIC ${srcs})
  target_include_directories(${target} PUBLIC ${gen})
  target_link_libraries(${target} PUBLIC PkgConfig::PROTOBUFC)
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
