package withlock_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/leaselock/leaselock/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testenv.Main(m), testenv.IgnoredGoroutines()...)
}
