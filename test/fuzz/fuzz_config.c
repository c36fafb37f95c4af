/* fuzz_config.c: the configuration parser on arbitrary files. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfg c;
    char err[1024];
    FILE *f;

    if (size == 0)
        return 0;
    /* auth_secret_file would read files named by the input: not here. */
    if (memmem(data, size, "_file", 5) != NULL)
        return 0;
    if ((f = fmemopen((void *)data, size, "r")) == NULL)
        return 0;
    if (cfg_load_stream(&c, f, "fuzz.conf", err, sizeof(err)) == 0) {
        struct cfg d;
        char keys[512];
        if (cfg_defaults(&d) != 0)
            abort();
        (void)cfg_diff_restart(&d, &c, keys, sizeof(keys));
        if (cfg_apply_reload(&d, &c) != 0)
            abort();
        cfg_free(&d);
        cfg_free(&c);
    } else if (strncmp(err, "fuzz.conf", 9) != 0) {
        abort(); /* every error names the file */
    }
    fclose(f);
    return 0;
}
