/*
 * fuzz_input.h - reading a libFuzzer input as a stream of little-endian fields, shared by the
 * C harnesses. A field past the end of the input reads as zero bytes.
 */
#ifndef MF_FUZZ_INPUT_H
#define MF_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

struct input {
    const uint8_t *p;
    size_t n;
};

static inline uint64_t take(struct input *in, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes && in->n; i++, in->p++, in->n--)
        v |= (uint64_t)*in->p << (8 * i);
    return v;
}

#endif /* MF_FUZZ_INPUT_H */
