/*
 * errors.c - the return codes' names and the failure messages of compile/new/update.
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

const char *mf_strerror(int code)
{
    /* indexed by -code; one meaning per code (mmiofilter.h) */
    static const char *const text[MF_ERRORS_MAX + 1] = {
        [0] = "success",
        [-MF_EWIDTH] = "access width is not 1, 2, 4 or 8",
        [-MF_ERANGE] = "access lies outside the BAR",
        [-MF_EVALUE] = "write value does not fit in the access width",
        [-MF_EDEVICE] = "the device backend failed",
        [-MF_EINVAL] = "invalid argument",
        [-MF_ENOMEM] = "out of memory",
        [-MF_EBUSY] = "policy update from inside an access would wait for itself",
        [-MF_ENESTED] = "accesses nested too deeply through callback backends",
        [-MF_ETARGET] = "a redirect target's backend failed",
    };
    return code <= 0 && code >= -MF_ERRORS_MAX ? text[-code] : "unknown error";
}

void mf_set_error(struct mf_error *err, int64_t rule, const char *fmt, ...)
{
    if (!err)
        return;
    err->rule = rule;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}
