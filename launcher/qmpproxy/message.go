package qmpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

var errNoBroker = errors.New("no broker is configured to grant PCI passthrough")

// command is one client command, parsed.
type command struct {
	Execute   string
	Arguments map[string]any // nil if absent
	ID        json.RawMessage
}

// decode parses data (one JSON object) with numbers kept as written.
func decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

// parseCommand accepts exactly QMP's command shape: "execute" (a
// string), optional "arguments" (an object) and "id" (any value).
// "exec-oob" and any other key are refused: libxl sends neither.
func parseCommand(data []byte) (*command, error) {
	var m map[string]json.RawMessage
	if err := decode(data, &m); err != nil {
		return nil, err
	}
	c := &command{ID: m["id"]}
	for k, v := range m {
		switch k {
		case "execute":
			if err := json.Unmarshal(v, &c.Execute); err != nil || c.Execute == "" {
				return c, errors.New(`"execute" must be a command name`)
			}
		case "arguments":
			if err := decode(v, &c.Arguments); err != nil || c.Arguments == nil {
				return c, errors.New(`"arguments" must be an object`)
			}
		case "id":
		default:
			return c, fmt.Errorf("key %q is not accepted", k)
		}
	}
	if c.Execute == "" {
		return c, errors.New(`no "execute"`)
	}
	return c, nil
}

// encode is the command as the proxy forwards it: re-encoded from what
// was parsed, so QEMU sees exactly what was checked (duplicate keys, for
// one, resolve the same way on both sides: there are none left).
func (c *command) encode() []byte {
	m := map[string]any{"execute": c.Execute}
	if c.Arguments != nil {
		m["arguments"] = c.Arguments
	}
	if c.ID != nil {
		m["id"] = c.ID
	}
	b, _ := json.Marshal(m)
	return append(b, '\r', '\n')
}

// str returns argument k as a string ("" if absent or not a string).
func (c *command) str(k string) string {
	s, _ := c.Arguments[k].(string)
	return s
}

// errorReply is QMP's error reply; id is omitted when nil.
func errorReply(id json.RawMessage, desc string) []byte {
	m := map[string]any{"error": map[string]string{"class": "GenericError", "desc": "dmsandbox: " + desc}}
	if id != nil {
		m["id"] = id
	}
	b, _ := json.Marshal(m)
	return append(b, '\r', '\n')
}

// backendMsg is what QEMU sends: an event, a reply or the greeting.
type backendMsg struct {
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	Return json.RawMessage `json:"return"`
	Error  json.RawMessage `json:"error"`
	ID     json.RawMessage `json:"id"`
	QMP    json.RawMessage `json:"QMP"`
}

func (m *backendMsg) isReply() bool { return m.Return != nil || m.Error != nil }
