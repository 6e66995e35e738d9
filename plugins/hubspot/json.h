// A very small JSON toolkit for connectors in C: no allocation while scanning, values are
// slices of the input text. Enough to pick fields out of `params-json` and to build request
// bodies; not a general-purpose JSON library.
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stdbool.h>
#include <stddef.h>

// A slice of JSON text: one complete value (`"abc"`, `[1,2]`, `{...}`, `42`, `true`).
typedef struct {
    const char *ptr;
    size_t len;
} json_slice;

// Returns whether `text` is exactly one well-formed JSON value (surrounding whitespace allowed).
bool json_valid(const char *text, size_t len);

// Finds `key` among the members of the top-level object `object`; on success stores its raw
// value in `*value`. Returns false when `object` is not an object or has no such member.
bool json_get(json_slice object, const char *key, json_slice *value);

// The kind of a value, from its first character: 's'tring, 'n'umber, 'o'bject, 'a'rray,
// 'b'oolean, 'z' for null, 0 for anything else.
char json_kind(json_slice value);

// Decodes a JSON string value into a NUL-terminated UTF-8 string allocated with malloc.
// Returns NULL when `value` is not a string, on an invalid escape, or when it holds `\u0000`
// (which would cut the C string short: `123\u0000456` would name contact 123).
char *json_string(json_slice value);

// Calls `each(item, user)` for every element of the array `array`; returns false when
// `array` is not an array.
bool json_each(json_slice array, void (*each)(json_slice item, void *user), void *user);

// A growable byte buffer for building bodies and URLs. Allocation failure aborts (the host
// turns the trap into a `connector_trap` for this request only).
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} buffer;

void buf_append(buffer *b, const char *bytes, size_t len);
void buf_puts(buffer *b, const char *text);
void buf_slice(buffer *b, json_slice value);
// Appends `text` as a JSON string literal, quotes and escapes included.
void buf_json_string(buffer *b, const char *text);
// Appends `text` percent-encoded for a URL path segment or query value (RFC 3986 unreserved
// characters stay as they are; everything else, `/` and `?` included, is escaped).
void buf_percent(buffer *b, const char *text);

#endif
