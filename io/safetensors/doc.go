// Package safetensors reads, validates and writes files in the safetensors
// format: an 8-byte little-endian header length N, N bytes of JSON describing
// each tensor's dtype, shape and data offsets, then the tensor data.
//
// Reading. ReadHeaderFile reads only the 8+N header bytes of a file (what
// `wtool inspect` needs). Open validates the header the same way and maps the
// data lazily; File.Tensor returns zero-copy views into the mapping and
// File.Release hands pages back to the kernel once a tensor has been used, so
// a streaming pass over a large file runs in bounded memory. Validation
// performs every check of the reference (Rust) implementation in its order,
// with error kinds named after its SafeTensorError variants, and adds stricter
// rejections: duplicate keys, a tensor named __metadata__, non-string
// metadata values (also rejected by the reference) and invalid UTF-8 anywhere
// in the header. All errors are *Error values naming the file and, where one
// is concerned, the tensor; test them with errors.Is against the Err* kinds.
//
// Writing. Encode writes a small file from memory; Create streams a large one
// tensor by tensor into a temporary file that Close syncs and renames into
// place. Both lay files out exactly as the reference writer does (tensors
// sorted by dtype then name, compact JSON with __metadata__ first, header
// padded with spaces to a multiple of 8), so the bytes are identical to what
// the Rust crate writes for the same tensors (metadata keys are sorted, where
// the reference's order is arbitrary).
//
// Why this package owns the format instead of wrapping
// github.com/nlpodyssey/safetensors: that module knows 13 of the 22 dtypes
// (a file with one F8 tensor fails to open), has no header-only or
// io.ReaderAt path, counts a scalar (shape []) as 0 elements, decodes the
// header with encoding/json (case-insensitive keys, last duplicate wins,
// invalid UTF-8 replaced silently, floats accepted into integers), and writes
// tensors in another order and with other JSON escaping than the reference.
// Each of those would have to be worked around at every call; owning the
// format costs less. The module is still used in this
// package's tests as an independent reader of the files wtool writes.
package safetensors
