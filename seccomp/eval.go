package seccomp

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Data is a synthetic struct seccomp_data for the evaluator.
type Data struct {
	Nr   int32
	Arch uint32 // AUDIT_ARCH_*
	IP   uint64
	Args [6]uint64
}

// bytes lays d out as the kernel does (native endian, 64 bytes).
func (d Data) bytes() []byte {
	b := make([]byte, 64)
	binary.NativeEndian.PutUint32(b[0:], uint32(d.Nr))
	binary.NativeEndian.PutUint32(b[4:], d.Arch)
	binary.NativeEndian.PutUint64(b[8:], d.IP)
	for i, a := range d.Args {
		binary.NativeEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

// maxSteps bounds an evaluation. Classic BPF only jumps forward, so a valid
// program ends within len(prog) steps; the bound only guards against bugs.
const maxSteps = 1 << 16

// Evaluate runs a seccomp BPF program over d, as the kernel's seccomp
// interpreter would, and returns the 32-bit return value. It accepts the
// instructions the kernel's seccomp_check_filter accepts (loads of
// seccomp_data words, the scratch memory, ALU, jumps, returns) and rejects
// anything else, out-of-range loads and jumps past the end.
//
// It is its own small interpreter rather than golang.org/x/net/bpf's VM
// because that VM reads packet words big-endian, and seccomp_data is native.
func Evaluate(prog []bpf.RawInstruction, d Data) (uint32, error) {
	ret, _, err := EvaluateSteps(prog, d)
	return ret, err
}

// EvaluateSteps is Evaluate that also returns how many instructions ran:
// the cost of the call in the kernel's interpreter (or JIT), which is what
// the layout (linear chain or binary tree) changes.
func EvaluateSteps(prog []bpf.RawInstruction, d Data) (ret uint32, steps int, err error) {
	ret, steps, err = evaluate(prog, d)
	return ret, steps + 1, err
}

func evaluate(prog []bpf.RawInstruction, d Data) (uint32, int, error) {
	data := d.bytes()
	var a, x uint32
	steps := 0
	var mem [16]uint32
	pc := 0
	for ; steps < maxSteps; steps++ {
		if pc < 0 || pc >= len(prog) {
			return 0, steps, fmt.Errorf("bpf: pc %d outside program of %d instructions", pc, len(prog))
		}
		ins := prog[pc]
		pc++
		k := ins.K
		switch ins.Op {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			if k%4 != 0 || int(k) > len(data)-4 {
				return 0, steps, fmt.Errorf("bpf: load at offset %d outside seccomp_data", k)
			}
			a = binary.NativeEndian.Uint32(data[k:])
		case unix.BPF_LD | unix.BPF_W | unix.BPF_LEN:
			a = uint32(len(data))
		case unix.BPF_LDX | unix.BPF_W | unix.BPF_LEN:
			x = uint32(len(data))
		case unix.BPF_LD | unix.BPF_IMM:
			a = k
		case unix.BPF_LDX | unix.BPF_IMM:
			x = k
		case unix.BPF_LD | unix.BPF_MEM, unix.BPF_LDX | unix.BPF_MEM, unix.BPF_ST, unix.BPF_STX:
			if k >= uint32(len(mem)) {
				return 0, steps, fmt.Errorf("bpf: scratch slot %d out of range", k)
			}
			switch ins.Op {
			case unix.BPF_LD | unix.BPF_MEM:
				a = mem[k]
			case unix.BPF_LDX | unix.BPF_MEM:
				x = mem[k]
			case unix.BPF_ST:
				mem[k] = a
			default:
				mem[k] = x
			}
		case unix.BPF_MISC | unix.BPF_TAX:
			x = a
		case unix.BPF_MISC | unix.BPF_TXA:
			a = x
		case unix.BPF_RET | unix.BPF_K:
			return k, steps, nil
		case unix.BPF_RET | unix.BPF_A:
			return a, steps, nil
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(k)
		default:
			switch ins.Op & 0x07 { // BPF_CLASS
			case unix.BPF_ALU:
				v := k
				if ins.Op&unix.BPF_X != 0 {
					v = x
				}
				r, err := alu(ins.Op&0xf0, a, v)
				if err != nil {
					return 0, steps, err
				}
				a = r
			case unix.BPF_JMP:
				v := k
				if ins.Op&unix.BPF_X != 0 {
					v = x
				}
				var cond bool
				switch ins.Op & 0xf0 {
				case unix.BPF_JEQ:
					cond = a == v
				case unix.BPF_JGT:
					cond = a > v
				case unix.BPF_JGE:
					cond = a >= v
				case unix.BPF_JSET:
					cond = a&v != 0
				default:
					return 0, steps, fmt.Errorf("bpf: bad jump opcode %#x at %d", ins.Op, pc-1)
				}
				if cond {
					pc += int(ins.Jt)
				} else {
					pc += int(ins.Jf)
				}
			default:
				return 0, steps, fmt.Errorf("bpf: opcode %#x at %d not allowed in seccomp", ins.Op, pc-1)
			}
		}
	}
	return 0, steps, fmt.Errorf("bpf: no return after %d steps", maxSteps)
}

func alu(op uint16, a, v uint32) (uint32, error) {
	switch op {
	case unix.BPF_ADD:
		return a + v, nil
	case unix.BPF_SUB:
		return a - v, nil
	case unix.BPF_MUL:
		return a * v, nil
	case unix.BPF_DIV:
		if v == 0 {
			return 0, fmt.Errorf("bpf: division by zero")
		}
		return a / v, nil
	case unix.BPF_MOD:
		if v == 0 {
			return 0, fmt.Errorf("bpf: modulo by zero")
		}
		return a % v, nil
	case unix.BPF_AND:
		return a & v, nil
	case unix.BPF_OR:
		return a | v, nil
	case unix.BPF_XOR:
		return a ^ v, nil
	case unix.BPF_LSH:
		return a << (v & 31), nil
	case unix.BPF_RSH:
		return a >> (v & 31), nil
	case unix.BPF_NEG:
		return -a, nil
	}
	return 0, fmt.Errorf("bpf: bad alu opcode %#x", op)
}

// Verdict is a decoded seccomp return value.
type Verdict struct {
	Action string // "allow", "errno", "kill_process", "kill_thread", "log", "trap", "trace", "user_notif"
	Data   uint16 // errno for "errno"
}

// DecodeVerdict splits a seccomp return value into action and data.
func DecodeVerdict(ret uint32) Verdict {
	data := uint16(ret & unix.SECCOMP_RET_DATA)
	switch ret & unix.SECCOMP_RET_ACTION_FULL {
	case unix.SECCOMP_RET_KILL_PROCESS:
		return Verdict{Action: "kill_process"}
	case unix.SECCOMP_RET_KILL_THREAD:
		return Verdict{Action: "kill_thread"}
	case unix.SECCOMP_RET_TRAP:
		return Verdict{Action: "trap", Data: data}
	case unix.SECCOMP_RET_ERRNO:
		return Verdict{Action: "errno", Data: data}
	case unix.SECCOMP_RET_USER_NOTIF:
		return Verdict{Action: "user_notif"}
	case unix.SECCOMP_RET_TRACE:
		return Verdict{Action: "trace", Data: data}
	case unix.SECCOMP_RET_LOG:
		return Verdict{Action: "log"}
	case unix.SECCOMP_RET_ALLOW:
		return Verdict{Action: "allow"}
	}
	// The kernel treats unknown actions as kill_process.
	return Verdict{Action: "kill_process"}
}

func (v Verdict) String() string {
	if v.Action == "errno" {
		return fmt.Sprintf("errno %d (%s)", v.Data, unix.ErrnoName(unix.Errno(v.Data)))
	}
	return v.Action
}

// sysData is an x86_64 call with the given number and arguments.
func sysData(nr uintptr, args ...uint64) Data {
	d := Data{Nr: int32(nr), Arch: unix.AUDIT_ARCH_X86_64}
	copy(d.Args[:], args)
	return d
}
