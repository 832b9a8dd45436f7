# cmake -DIN=file -DOUT=file.c -DSYMBOL=name -P EmbedFile.cmake
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" bytes "${bytes}")
file(WRITE ${OUT} "/* Generated from ${IN}; do not edit. */\n#include <stddef.h>\n#include <stdint.h>\n"
  "const uint8_t ${SYMBOL}[] = {\n${bytes}\n};\nconst size_t ${SYMBOL}_len = ${len};\n")
