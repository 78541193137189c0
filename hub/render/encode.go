package render

import (
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	yamlv2 "go.yaml.in/yaml/v2"
)

// encodeYAML writes a rendered object as YAML, byte for byte as sigs.k8s.io/yaml.Marshal does,
// without its round trip through JSON: that encodes the object as JSON, parses the JSON back
// with the YAML parser and encodes the result, and its parser's token queue made it most of what
// the hub allocated in a rollout over 10,000 cells. The object goes to the same YAML encoder
// after the two changes the JSON round trip makes to values (normalize).
func encodeYAML(obj map[string]any) ([]byte, error) {
	v, err := normalize(obj)
	if err != nil {
		return nil, err
	}
	return yamlv2.Marshal(v)
}

// errControl is the YAML parser's refusal of a character it does not read, which the JSON round
// trip meets in a string that holds one (json writes it as it is).
var errControl = errors.New("yaml: control characters are not allowed")

// normalize copies v with the changes a JSON round trip makes: a whole float within JSON's plain
// notation comes back as an integer (json writes 8080.0 as 8080, which YAML reads as an int),
// invalid UTF-8 comes back as U+FFFD per bad byte (json replaces it), and a string with a
// character YAML does not read fails (json leaves it, and the parser refuses it).
func normalize(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		// json writes the keys in byte order, and YAML keeps the last of equal ones: keys that
		// differ only in invalid UTF-8 become one, the last in that order.
		keys := slices.Sorted(maps.Keys(t))
		out := make(map[string]any, len(t))
		for _, k := range keys {
			key, err := jsonString(k)
			if err != nil {
				return nil, err
			}
			if out[key], err = normalize(t[k]); err != nil {
				return nil, err
			}
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			var err error
			if out[i], err = normalize(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	case string:
		return jsonString(t)
	case float64:
		return wholeFloat(t), nil
	case float32:
		return wholeFloat(float64(t)), nil
	}
	return v, nil
}

// jsonString is s as the JSON round trip returns it: each byte that is not valid UTF-8 replaced
// with U+FFFD, as encoding/json does, and refused when it holds a character that json writes
// as it is and YAML does not read (DEL, C1 controls but NEL, U+FFFE and U+FFFF; json escapes
// the C0 controls).
func jsonString(s string) (string, error) {
	if !utf8.ValidString(s) {
		out := make([]rune, 0, len(s))
		for _, r := range s {
			out = append(out, r) // an invalid byte ranges as utf8.RuneError, one per byte
		}
		s = string(out)
	}
	for _, r := range s {
		if r == 0x7F || (r >= 0x80 && r <= 0x9F && r != 0x85) || r == 0xFFFE || r == 0xFFFF {
			return "", errControl
		}
	}
	return s, nil
}

// wholeFloat is f as the JSON round trip returns it: json writes a whole float below 1e21 as the
// plain digits of its shortest decimal form, which YAML reads as an int64, a uint64 past that,
// a float past both.
func wholeFloat(f float64) any {
	if f != math.Trunc(f) || math.IsInf(f, 0) || math.Abs(f) >= 1e21 {
		return f
	}
	digits := strconv.FormatFloat(f, 'f', -1, 64)
	if i, err := strconv.ParseInt(digits, 10, 64); err == nil {
		return i
	}
	if u, err := strconv.ParseUint(digits, 10, 64); err == nil {
		return u
	}
	return f
}
