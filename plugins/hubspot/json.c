// See json.h. Recursion is bounded so hostile input cannot exhaust the wasm stack.
#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Skips a string starting at its opening quote; returns the position after the closing one.
static const char *skip_string(const char *p, const char *end) {
    p++;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            p++;
            if (p >= end) return NULL;
            if (*p == 'u') {
                if (end - p < 5) return NULL;
                for (int i = 1; i <= 4; i++)
                    if (hex_digit(p[i]) < 0) return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
        p++;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *end, int depth);

static const char *skip_container(const char *p, const char *end, int depth, char close, bool members) {
    if (depth > MAX_DEPTH) return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    while (p < end) {
        if (members) {
            if (*p != '"' || !(p = skip_string(p, end))) return NULL;
            p = skip_ws(p, end);
            if (p >= end || *p != ':') return NULL;
            p = skip_ws(p + 1, end);
        }
        if (!(p = skip_value(p, end, depth + 1))) return NULL;
        p = skip_ws(p, end);
        if (p >= end) return NULL;
        if (*p == close) return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, end);
    }
    return NULL;
}

static const char *skip_literal(const char *p, const char *end, const char *word) {
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

static const char *skip_number(const char *p, const char *end) {
    const char *start = p;
    if (p < end && *p == '-') p++;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    if (p == digits) return NULL;
    if (p < end && *p == '.') {
        p++;
        const char *fraction = p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == fraction) return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        const char *exponent = p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == exponent) return NULL;
    }
    return p > start ? p : NULL;
}

static const char *skip_value(const char *p, const char *end, int depth) {
    if (p >= end) return NULL;
    switch (*p) {
    case '"': return skip_string(p, end);
    case '{': return skip_container(p, end, depth, '}', true);
    case '[': return skip_container(p, end, depth, ']', false);
    case 't': return skip_literal(p, end, "true");
    case 'f': return skip_literal(p, end, "false");
    case 'n': return skip_literal(p, end, "null");
    default: return skip_number(p, end);
    }
}

bool json_valid(const char *text, size_t len) {
    const char *end = text + len;
    const char *p = skip_value(skip_ws(text, end), end, 0);
    return p && skip_ws(p, end) == end;
}

char json_kind(json_slice value) {
    if (value.len == 0) return 0;
    switch (value.ptr[0]) {
    case '"': return 's';
    case '{': return 'o';
    case '[': return 'a';
    case 't':
    case 'f': return 'b';
    case 'n': return 'z';
    default: return (value.ptr[0] == '-' || (value.ptr[0] >= '0' && value.ptr[0] <= '9')) ? 'n' : 0;
    }
}

bool json_get(json_slice object, const char *key, json_slice *value) {
    const char *end = object.ptr + object.len;
    const char *p = skip_ws(object.ptr, end);
    if (p >= end || *p != '{') return false;
    p = skip_ws(p + 1, end);
    size_t key_len = strlen(key);
    while (p < end && *p == '"') {
        const char *name_end = skip_string(p, end);
        if (!name_end) return false;
        // Keys with escapes never match: none of ours need them.
        bool match = (size_t)(name_end - p - 2) == key_len && memcmp(p + 1, key, key_len) == 0;
        p = skip_ws(name_end, end);
        if (p >= end || *p != ':') return false;
        p = skip_ws(p + 1, end);
        const char *value_end = skip_value(p, end, 1);
        if (!value_end) return false;
        if (match) {
            value->ptr = p;
            value->len = (size_t)(value_end - p);
            return true;
        }
        p = skip_ws(value_end, end);
        if (p < end && *p == ',') p = skip_ws(p + 1, end);
    }
    return false;
}

bool json_each(json_slice array, void (*each)(json_slice item, void *user), void *user) {
    const char *end = array.ptr + array.len;
    const char *p = skip_ws(array.ptr, end);
    if (p >= end || *p != '[') return false;
    p = skip_ws(p + 1, end);
    while (p < end && *p != ']') {
        const char *item_end = skip_value(p, end, 1);
        if (!item_end) return false;
        each((json_slice){p, (size_t)(item_end - p)}, user);
        p = skip_ws(item_end, end);
        if (p < end && *p == ',') p = skip_ws(p + 1, end);
    }
    return true;
}

static void put_utf8(buffer *b, uint32_t cp) {
    char out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_append(b, out, n);
}

static uint32_t hex4(const char *p) {
    return (uint32_t)(hex_digit(p[0]) << 12 | hex_digit(p[1]) << 8 | hex_digit(p[2]) << 4 | hex_digit(p[3]));
}

char *json_string(json_slice value) {
    if (json_kind(value) != 's' || !skip_string(value.ptr, value.ptr + value.len)) return NULL;
    buffer out = {0};
    const char *p = value.ptr + 1;
    const char *end = value.ptr + value.len - 1;  // the closing quote
    while (p < end) {
        if (*p != '\\') {
            buf_append(&out, p++, 1);
            continue;
        }
        p++;
        char c = *p++;
        switch (c) {
        case 'b': buf_append(&out, "\b", 1); break;
        case 'f': buf_append(&out, "\f", 1); break;
        case 'n': buf_append(&out, "\n", 1); break;
        case 'r': buf_append(&out, "\r", 1); break;
        case 't': buf_append(&out, "\t", 1); break;
        case 'u': {
            uint32_t cp = hex4(p);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t low = hex4(p + 2);
                if (low >= 0xDC00 && low < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;  // a lone surrogate
            if (cp == 0) {
                free(out.data);
                return NULL;
            }
            put_utf8(&out, cp);
            break;
        }
        default: buf_append(&out, &c, 1); break;  // \" \\ \/
        }
    }
    buf_append(&out, "", 1);  // NUL terminator
    return out.data;
}

void buf_append(buffer *b, const char *bytes, size_t len) {
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + len) cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) abort();
        b->data = data;
        b->cap = cap;
    }
    if (len) memcpy(b->data + b->len, bytes, len);
    b->len += len;
}

void buf_puts(buffer *b, const char *text) { buf_append(b, text, strlen(text)); }

void buf_slice(buffer *b, json_slice value) { buf_append(b, value.ptr, value.len); }

void buf_json_string(buffer *b, const char *text) {
    static const char hex[] = "0123456789abcdef";
    buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char escaped[2] = {'\\', (char)*p};
            buf_append(b, escaped, 2);
        } else if (*p < 0x20) {
            char escaped[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            buf_append(b, escaped, 6);
        } else {
            buf_append(b, (const char *)p, 1);
        }
    }
    buf_append(b, "\"", 1);
}

void buf_percent(buffer *b, const char *text) {
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        unsigned char c = *p;
        bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                          c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            buf_append(b, (const char *)p, 1);
        } else {
            char escaped[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(b, escaped, 3);
        }
    }
}
