/*
 * pkgconfig_user.c - a C program built against the installed library with nothing but
 * `pkg-config --cflags --libs mmiofilter` (tests/test_install.py): one rule, one access of
 * each kind, and the version of the library it runs against.
 */
#include <mmiofilter.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    static uint8_t bar[8192];
    struct mf_rule rule = {.name = "deny", .start = 0x100, .size = 4, .action = MF_DENY};
    struct mf_config cfg = {.bar_size = sizeof bar, .page_size = 4096, .fill = 0xFF};
    struct mf_backend be = {.kind = MF_BACKEND_MEMORY, .base = bar, .length = sizeof bar};
    struct mf_error err;
    struct mf_table *t = mf_table_compile(&rule, 1, &cfg, &err);
    struct mf_filter *f = t ? mf_filter_new(&be, NULL, 0, 0, 16, t, &err) : NULL;
    if (!f) {
        fprintf(stderr, "setup: %s\n", err.message);
        return 1;
    }
    struct mf_result r;
    mf_access_scalar(f, 0x100, 4, 1, 0x12345678, &r); /* blocked: the device keeps 0 */
    int blocked = r.outcome == MF_BLOCKED && bar[0x100] == 0;
    mf_access_scalar(f, 0x100, 4, 0, 0, &r);
    int filled = r.value == 0xFFFFFFFFu;
    mf_access_scalar(f, 0x200, 4, 1, 0xCAFE, &r);
    int passed = r.outcome == MF_PASS && bar[0x200] == 0xFE;
    printf("header %s library %s blocked %d filled %d passed %d\n", MF_VERSION_STRING,
           mf_version(), blocked, filled, passed);
    mf_filter_free(f);
    return blocked && filled && passed && strcmp(mf_version(), MF_VERSION_STRING) == 0 ? 0 : 1;
}
