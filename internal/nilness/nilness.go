// Package nilness tells a nil value from a usable one, for the checks that
// resourcelock and withlock make before any request.
package nilness

import "reflect"

// Is reports whether v is nil, or an interface holding a nil pointer, map,
// slice, channel or func: a value whose methods would panic.
func Is(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func:
		return r.IsNil()
	}
	return false
}
