package render

import "fmt"

// InvalidError is an input a person must fix: rendering it again will fail the same way.
type InvalidError struct {
	// Reason is a PascalCase condition reason from the hub API.
	Reason string
	// Message says what is wrong and where.
	Message string
}

func (e *InvalidError) Error() string { return e.Message }

func invalid(reason, format string, args ...any) error {
	return &InvalidError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}
