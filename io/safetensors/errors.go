package safetensors

import (
	"errors"
	"strconv"
	"strings"
)

// kind is an error category. Kinds may refine a broader kind (a duplicate key
// is also an invalid header), which errors.Is follows through Unwrap.
type kind struct {
	name   string
	msg    string
	parent error
}

func (k *kind) Error() string { return k.msg }
func (k *kind) Unwrap() error { return k.parent }

// The kinds of invalid file, named and ordered after the reference (Rust)
// implementation's SafeTensorError variants, plus the stricter checks wtool
// adds. Every error this package returns for a bad file is an *Error whose
// Kind is one of these, so errors.Is(err, ErrInvalidOffset) works.
var (
	// ErrHeaderTooSmall: the file is shorter than the 8-byte length prefix.
	ErrHeaderTooSmall error = &kind{name: "HeaderTooSmall", msg: "header too small"}
	// ErrHeaderTooLarge: the declared header length exceeds 100,000,000 bytes.
	ErrHeaderTooLarge error = &kind{name: "HeaderTooLarge", msg: "header too large"}
	// ErrInvalidHeaderLength: the declared header runs past the end of the file.
	ErrInvalidHeaderLength error = &kind{name: "InvalidHeaderLength", msg: "invalid header length"}
	// ErrInvalidHeader: the header is not valid UTF-8.
	ErrInvalidHeader error = &kind{name: "InvalidHeader", msg: "header is not valid UTF-8"}
	// ErrInvalidHeaderDeserialization: the header is not the expected JSON
	// (syntax, unknown dtype, numbers that are not unsigned integers, offsets
	// that are not a pair, trailing characters, missing fields).
	ErrInvalidHeaderDeserialization error = &kind{name: "InvalidHeaderDeserialization", msg: "invalid header JSON"}
	// ErrDuplicateKey: a key appears twice in the header (stricter than Rust,
	// whose JSON decoder keeps the last value silently).
	ErrDuplicateKey error = &kind{name: "DuplicateKey", msg: "duplicate key", parent: ErrInvalidHeaderDeserialization}
	// ErrInvalidMetadata: __metadata__ is not an object of strings.
	ErrInvalidMetadata error = &kind{name: "InvalidMetadata", msg: "__metadata__ must map strings to strings", parent: ErrInvalidHeaderDeserialization}
	// ErrReservedName: a tensor is named __metadata__.
	ErrReservedName error = &kind{name: "ReservedName", msg: "a tensor may not be named __metadata__", parent: ErrInvalidHeaderDeserialization}
	// ErrInvalidOffset: a tensor's data does not start where the previous one
	// ends (the first must start at 0), or ends before it begins.
	ErrInvalidOffset error = &kind{name: "InvalidOffset", msg: "invalid offset"}
	// ErrValidationOverflow: the element count or byte size overflows.
	ErrValidationOverflow error = &kind{name: "ValidationOverflow", msg: "overflow computing buffer size from shape and dtype"}
	// ErrMisalignedSlice: the tensor's size in bits is not a multiple of 8
	// (an odd number of F4 elements, for example).
	ErrMisalignedSlice error = &kind{name: "MisalignedSlice", msg: "tensor size is not a whole number of bytes"}
	// ErrTensorInvalidInfo: data_offsets span a byte count other than shape and
	// dtype require.
	ErrTensorInvalidInfo error = &kind{name: "TensorInvalidInfo", msg: "invalid shape, data type, or offset for tensor"}
	// ErrMetadataIncompleteBuffer: the data section is not exactly covered by
	// the tensors (trailing bytes, or a truncated file).
	ErrMetadataIncompleteBuffer error = &kind{name: "MetadataIncompleteBuffer", msg: "incomplete metadata, file not fully covered"}
	// ErrTensorNotFound: no tensor of that name.
	ErrTensorNotFound error = &kind{name: "TensorNotFound", msg: "tensor not found"}
)

// Error describes a problem with a safetensors file: which file, which tensor
// (when one is concerned), the kind of problem and a detail.
type Error struct {
	File   string // path of the file, when known
	Tensor string // name of the tensor concerned, if any
	Kind   error  // one of the Err* kinds of this package
	Detail string // what exactly was wrong, such as a byte position
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Tensor != "" {
		b.WriteString("tensor ")
		b.WriteString(strconv.Quote(e.Tensor))
		b.WriteString(": ")
	}
	b.WriteString(e.Kind.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap returns the kind, so errors.Is(err, ErrInvalidOffset) works.
func (e *Error) Unwrap() error { return e.Kind }

// KindName returns the name of the kind of a format error, as the reference
// implementation names its error variants ("InvalidOffset",
// "MetadataIncompleteBuffer", ...; "DuplicateKey", "InvalidMetadata" and
// "ReservedName" for wtool's stricter checks), or "" for other errors.
func KindName(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return ""
	}
	if k, ok := e.Kind.(*kind); ok {
		return k.name
	}
	return ""
}

// withFile returns err with the file name set, when err is an *Error.
func withFile(err error, file string) error {
	if e, ok := err.(*Error); ok && e.File == "" {
		c := *e
		c.File = file
		return &c
	}
	return err
}
