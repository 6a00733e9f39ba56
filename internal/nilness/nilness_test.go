package nilness_test

import (
	"testing"

	"github.com/leaselock/leaselock/internal/nilness"
)

type thing struct{}

func (*thing) Do() {}

type doer interface{ Do() }

func TestIs(t *testing.T) {
	var nilThing *thing
	var (
		nilMap   map[string]int
		nilSlice []int
		nilChan  chan int
		nilFunc  func()
	)
	tests := []struct {
		name string
		v    any
		want bool
	}{
		{name: "nil", v: nil, want: true},
		{name: "nil pointer in an interface", v: doer(nilThing), want: true},
		{name: "nil map", v: nilMap, want: true},
		{name: "nil slice", v: nilSlice, want: true},
		{name: "nil channel", v: nilChan, want: true},
		{name: "nil func", v: nilFunc, want: true},
		{name: "pointer", v: &thing{}, want: false},
		{name: "struct", v: thing{}, want: false},
		{name: "empty map", v: map[string]int{}, want: false},
		{name: "empty slice", v: []int{}, want: false},
		{name: "channel", v: make(chan int), want: false},
		{name: "func", v: func() {}, want: false},
		{name: "zero int", v: 0, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nilness.Is(tt.v); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
