package actors

import (
	"fmt"
	"reflect"

	"blocktree.dev/bt/internal/canon"
)

// TypeSpec names a Go type for messages that cross nodes. Make one with
// TypeOf and pass it to WithTypes; both nodes must register the same name
// for the same shape.
type TypeSpec struct {
	name string
	t    reflect.Type
}

// TypeOf names the type T on the wire: TypeOf[Ping]("example.com/ping").
// T's values are encoded as deterministic CBOR (struct fields by name, or
// by their `cbor:"…"` tags). T may be a pointer type: values then arrive
// as pointers.
func TypeOf[T any](name string) TypeSpec {
	return TypeSpec{name: name, t: reflect.TypeFor[T]()}
}

// Built-in wire types, registered in every runtime.
var builtinTypes = []TypeSpec{
	TypeOf[string]("string"),
	TypeOf[[]byte]("bytes"),
	TypeOf[int]("int"),
	TypeOf[int64]("int64"),
	TypeOf[uint64]("uint64"),
	TypeOf[bool]("bool"),
	TypeOf[float64]("float64"),
}

// maxTypeName bounds a type name on the wire.
const maxTypeName = 255

type typeRegistry struct {
	byName map[string]reflect.Type
	byType map[reflect.Type]string
}

func newTypeRegistry(specs []TypeSpec) (*typeRegistry, error) {
	tr := &typeRegistry{byName: make(map[string]reflect.Type), byType: make(map[reflect.Type]string)}
	for _, s := range append(append([]TypeSpec(nil), builtinTypes...), specs...) {
		switch {
		case s.t == nil || s.name == "" || len(s.name) > maxTypeName:
			return nil, fmt.Errorf("actors: register type %q: a name of 1 to %d bytes and a type are needed", s.name, maxTypeName)
		case s.t.Kind() == reflect.Interface:
			return nil, fmt.Errorf("actors: register type %q: %v is an interface type", s.name, s.t)
		}
		if t, ok := tr.byName[s.name]; ok && t != s.t {
			return nil, fmt.Errorf("actors: register type %q: already names %v, not %v", s.name, t, s.t)
		}
		if n, ok := tr.byType[s.t]; ok && n != s.name {
			return nil, fmt.Errorf("actors: register type %v: already named %q, not %q", s.t, n, s.name)
		}
		tr.byName[s.name] = s.t
		tr.byType[s.t] = s.name
	}
	return tr, nil
}

// encode returns v's type name and canonical encoding.
func (tr *typeRegistry) encode(v any) (string, []byte, error) {
	t := reflect.TypeOf(v)
	name, ok := tr.byType[t]
	if !ok {
		return "", nil, fmt.Errorf("%v (register it with WithTypes(TypeOf[%v](name)) on both nodes): %w", t, t, ErrUnregisteredType)
	}
	b, err := canon.Marshal(v)
	if err != nil {
		return "", nil, fmt.Errorf("encode %v: %w", t, err)
	}
	return name, b, nil
}

// decode decodes a value of the type registered as name.
func (tr *typeRegistry) decode(name string, data []byte) (any, error) {
	t, ok := tr.byName[name]
	if !ok {
		return nil, fmt.Errorf("type name %q: %w", name, ErrUnregisteredType)
	}
	if t.Kind() == reflect.Pointer {
		v := reflect.New(t.Elem())
		if err := canon.Unmarshal(data, v.Interface()); err != nil {
			return nil, fmt.Errorf("decode %q: %w: %w", name, ErrBadMessage, err)
		}
		return v.Interface(), nil
	}
	v := reflect.New(t)
	if err := canon.Unmarshal(data, v.Interface()); err != nil {
		return nil, fmt.Errorf("decode %q: %w: %w", name, ErrBadMessage, err)
	}
	return v.Elem().Interface(), nil
}
