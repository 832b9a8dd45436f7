# cmake -DIN=file -DOUT=file.c -DNAME=symbol -P RtcEmbed.cmake
# Writes OUT defining `const char NAME[]` (IN's bytes plus a NUL) and
# `const size_t NAME_len` (without the NUL).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" bytes "${bytes}")
file(WRITE ${OUT} "/* Generated from ${IN} by cmake/RtcEmbed.cmake. */\n#include <stddef.h>\n"
  "const char ${NAME}[] = {\n${bytes}0x00};\n"
  "const size_t ${NAME}_len = ${len};\n")
