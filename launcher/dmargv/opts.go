package dmargv

import "strings"

// QEMU's option values are QemuOpts strings: comma-separated key=value
// pairs, the first of which may be a bare value for an implied key
// ("socket,id=x" is backend=socket), and ",," for a literal comma.

// kv is one key=value of an option string. Implied marks the bare first
// value; Key is then the implied key's name.
type kv struct {
	Key, Value string
	Implied    bool // the bare first value of an implied key
	Flag       bool // a bare key without "=" ("server")
}

// opts is a parsed option string, in order.
type opts []kv

// splitOpts splits s on single commas, turning ",," into ",".
func splitOpts(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

// parseOpts parses s; a first element without '=' is the value of
// implied (when implied is "", it becomes a key with an empty value, as
// QEMU treats a flag such as "server").
func parseOpts(s, implied string) opts {
	var o opts
	for i, part := range splitOpts(s) {
		k, v, ok := strings.Cut(part, "=")
		switch {
		case ok:
			o = append(o, kv{Key: k, Value: v})
		case i == 0 && implied != "":
			o = append(o, kv{Key: implied, Value: part, Implied: true})
		default:
			o = append(o, kv{Key: part, Flag: true})
		}
	}
	return o
}

// get returns the value of key and whether it is present.
func (o opts) get(key string) (string, bool) {
	for _, e := range o {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// set replaces key's value (all occurrences) or appends key=value.
func (o opts) set(key, value string) opts {
	found := false
	for i := range o {
		if o[i].Key == key {
			o[i].Value, o[i].Flag = value, false
			found = true
		}
	}
	if !found {
		o = append(o, kv{Key: key, Value: value})
	}
	return o
}

// del removes every occurrence of key.
func (o opts) del(key string) opts {
	out := o[:0:0]
	for _, e := range o {
		if e.Key != key {
			out = append(out, e)
		}
	}
	return out
}

// String formats o back into QEMU's syntax, doubling commas in values.
func (o opts) String() string {
	parts := make([]string, 0, len(o))
	for _, e := range o {
		v := strings.ReplaceAll(e.Value, ",", ",,")
		switch {
		case e.Implied:
			parts = append(parts, v)
		case e.Flag:
			parts = append(parts, strings.ReplaceAll(e.Key, ",", ",,"))
		default:
			parts = append(parts, strings.ReplaceAll(e.Key, ",", ",,")+"="+v)
		}
	}
	return strings.Join(parts, ",")
}
