/* rtcctl: the command-line internal caller of rtc-auth and rtc-signaling
 * (see rtc/cli.h and clients/cli/README.md). */
#include <stdio.h>

#include "rtc/cli.h"

int main(int argc, char **argv)
{
    return rtc_cli_main(argc, argv, NULL, stdout, stderr);
}
