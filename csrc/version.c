/*
 * version.c - the library's version, as the header that built it says (mmiofilter.h).
 */
#include "mmiofilter.h"

const char *mf_version(void)
{
    return MF_VERSION_STRING;
}
