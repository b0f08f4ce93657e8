/*
 * msixboot.S: a 512-byte MBR boot sector (GNU as, real mode) that finds
 * QEMU's e1000e (8086:10d3) on bus 0, programs entry 0 of its MSI-X
 * table, enables MSI-X, has the device raise an interrupt through that
 * entry and takes it through the real-mode IVT. Each step is a
 * "MSIXBOOT: ..." line on the debug port 0xE9 (Xen prints them in
 * `xl dmesg` as "(dN) MSIXBOOT: ..."; plain QEMU with
 * -device isa-debugcon,iobase=0xe9). msiboot.S is its sibling for MSI on
 * edu, where the shared parts are explained at more length.
 *
 * The table entry and the enable are the point: under Xen, QEMU's xen_pt
 * maps a pirq for an MSI-X entry (xc_physdev_map_pirq_msi, with the entry
 * number and the table's BAR) and binds it to the guest vector
 * (xc_domain_update_msi_irq) once the guest has written the entry's
 * address and data with its vector control unmasked, and then sets the
 * enable bit with the function mask clear: in that order here.
 *
 * Built by build.go: as --32, ld -Ttext 0x7c00, objcopy -O binary.
 * Assembling with --defsym NO_MSIX_ENABLE=1 leaves MSI-X disabled (the
 * tests' control: then no interrupt may arrive).
 *
 * Registers: %edi the PCI config address of the device (0x80000000 |
 * dev << 11: bus 0, function 0) throughout; %bl a config register offset
 * for cfgsel (a multiple of 4: config space is read and written as whole
 * dwords); %ebx e1000e's BAR 0 + C0h once the config work is done. %ds is
 * a flat 4 GiB segment (unreal mode), so 32-bit addresses reach the BARs
 * and the APIC. put and say clobber %si and %al, hex %eax and %cl, cfgsel
 * %eax and %dx. Values that outlive a call wait on the stack, each push
 * paired with the pop below it.
 *
 * It has to fit 510 bytes, hence the terse code: strings follow the call
 * that prints them, end in a character with bit 7 set (text, below)
 * rather than in a NUL, and the 16-bit code carries operand/address-size
 * prefixes for the 32-bit values.
 */

	.set VECTOR, 0x61	/* IVT 60h-66h are for user programs; 60h is msiboot's */
	.set E1000E_ID, 0x10d38086
	.set APIC, 0xfee00000	/* local APIC registers (physical) */

	/*
	 * e1000e's interrupt registers (82574 datasheet; QEMU's
	 * hw/net/e1000e_core.c) as offsets from %ebx = BAR 0 + C0h, which
	 * keeps them within an 8-bit displacement.
	 */
	.set ICR, 0xc0-0xc0	/* causes; a write clears the causes written */
	.set ICS, 0xc8-0xc0	/* a write sets causes; reads as ICR, with no side effect */
	.set IMS, 0xd0-0xc0	/* a write unmasks causes */
	.set IVAR, 0xe4-0xc0	/* the MSI-X entry of each cause */
	.set OTHER, 0x01000000	/* bit 24, the "other" cause, in ICR, ICS and IMS */
	.set IVAR_OTHER0, 0x00080000	/* IVAR bits 16-19, "other": valid (8), entry 0 */

/*
 * text: a string for put, its last character given apart so that its
 * bit 7 can mark the end.
 */
.macro text s:req, last:req
	.ascii "\s"
	.byte \last | 0x80
.endm

	.code16
	.text
	.globl start
/* SeaBIOS enters at 0000:7C00 with IF = 1 and its boot stack, used as is. */
start:
	cli

	/*
	 * Unreal mode: PE on for a moment to load %ds with a flat 4 GiB data
	 * descriptor, which it keeps back in real mode (see msiboot.S; %ds
	 * rather than %fs here, which spares a prefix on every access, and
	 * base 0 keeps %ds:%si right for put).
	 */
	lgdt %cs:gdtr
	mov %cr0, %eax
	inc %ax
	mov %eax, %cr0
	push $8
	pop %ds
	dec %ax
	mov %eax, %cr0

	/*
	 * Both 8259s masked for good: a BIOS interrupt handler may reload the
	 * segment registers, which would end unreal mode, and e1000e's INTx
	 * must not reach the CPU in the control. Fast A20 on: BAR addresses
	 * have bit 20 set as often as not.
	 */
	mov $0xff, %al
	out %al, $0x21
	out %al, $0xa1
	mov $2, %al
	out %al, $0x92

	/* Scan bus 0, devices 0..31, function 0, for the e1000e. */
	mov $0x80000000, %edi
	mov $0, %bl
scan:
	call cfgsel
	cmp $E1000E_ID, %eax
	je found
	add $0x800, %di		/* next device; wraps to 0 after device 31 */
	jnz scan
	call say
	text "no e1000e", '\n'
	jmp done

found:
	call say
	text "e1000e at 00", ':'
	mov %edi, %eax
	shl $13, %eax		/* the device number is now the top byte */
	mov $2, %cl
	call hex
	call put
	text ".0 bar0", ' '

	/*
	 * BAR 0, the registers, printed as read: a 32-bit memory BAR of
	 * 128 KiB, its flag bits (0-3) 0. Kept for the raise.
	 */
	mov $0x10, %bl
	call cfgsel
	push %eax
	call hex8nl

	/*
	 * Command register: memory decode for the BARs (the MSI-X table is in
	 * one), and bus master, since an MSI-X message is a memory write by
	 * the device: without it QEMU drops it.
	 */
	mov $0x04, %bl
	call cfgsel
	or $0x06, %al
	out %al, %dx

	/*
	 * The capability list, for MSI-X (id 11h). Unbounded: a list that
	 * loops would hang here (the harness times out).
	 */
	mov $0x34, %bl
	call cfgsel
capnext:
	and $0xfc, %al
	jz nomsix
	mov %al, %bl
	call cfgsel		/* id, next, message control (bits 16-31) */
	cmp $0x11, %al
	je msix
	mov %ah, %al
	jmp capnext
nomsix:
	/* No MSI-X capability, or its table in a BAR this sector cannot use. */
	call say
	text "no msix", '\n'
	jmp done

msix:
	push %bx		/* the capability's offset, for the enable */

	/*
	 * The table: Table Offset/BIR (capability + 4) names the BAR (BIR,
	 * bits 0-2: BAR BIR is config 10h + 4 * BIR) and the offset in it
	 * (the rest). Only a 32-bit memory BAR that has an address will do:
	 * not I/O (bit 0), not 64-bit (type, bits 1-2, 10b), not 0 (a table
	 * "at" 0 would overwrite the IVT). The reserved BIRs 6 and 7 are not
	 * refused (no room): they would read config 28h and 2Ch as a BAR.
	 */
	add $4, %bl
	call cfgsel
	push %eax
	and $7, %al
	add $4, %al
	shl $2, %al
	mov %al, %bl
	call cfgsel
	test $5, %al
	jnz nomsix
	and $0xfffffff0, %eax
	jz nomsix
	pop %esi
	and $0xfff8, %si	/* the offset alone */
	add %eax, %esi

	/*
	 * Entry 0 (16 bytes: address, upper address, data, vector control).
	 * Address 0xFEE00000: physical destination APIC ID 0, the boot CPU's
	 * under QEMU and Xen alike; data: fixed delivery, edge, the vector;
	 * vector control 0: unmasked (the reset value masks every entry).
	 * MSI-X is still disabled, so the order of the writes is free.
	 */
	mov $APIC, %eax
	addr32 mov %eax, (%esi)
	xor %eax, %eax
	addr32 mov %eax, 4(%esi)
	addr32 mov %eax, 12(%esi)
	mov $VECTOR, %al
	addr32 mov %eax, 8(%esi)

	/*
	 * The handler, in place before anything can be delivered (IF = 0).
	 * The local APIC is software-enabled already: by SeaBIOS under plain
	 * QEMU, by hvmloader (apic_setup) under Xen.
	 */
	movl $isr, VECTOR*4	/* offset isr, segment 0 */

	/*
	 * Enable last, the entry in place: here xen_pt maps the pirq. Message
	 * control is the capability's upper half: enable, bit 15 (31 here),
	 * set; function mask, bit 14 (30), clear; id and next are read-only.
	 */
	pop %bx
	call cfgsel
	.ifndef NO_MSIX_ENABLE	/* a test's control: the same write, enable bit clear */
	bts $31, %eax
	.endif
	btr $30, %eax
	out %eax, %dx
	call say
	text "msix enabled, entry 0 vector 0x61", '\n'
	.if VECTOR != 0x61
	.error "VECTOR changed: change the message above"
	.endif

	/*
	 * Raise: the "other" cause mapped to entry 0 (IVAR), unmasked (IMS),
	 * set (ICS). With MSI-X enabled QEMU's e1000e then sends entry 0's
	 * message (e1000e_msix_notify); with MSI-X off it asserts INTx,
	 * masked here. BAR 0's low byte is 0 (128 KiB), so mov sets it to C0h.
	 */
	pop %ebx
	mov $0xc0, %bl
	mov $IVAR_OTHER0, %eax
	addr32 mov %eax, IVAR(%ebx)
	shl $5, %eax
	.if IVAR_OTHER0 << 5 != OTHER
	.error "IVAR_OTHER0 << 5 is not OTHER"
	.endif
	addr32 mov %eax, IMS(%ebx)
	addr32 mov %eax, ICS(%ebx)
	sti

	/*
	 * Wait until the handler has cleared the causes (ICS, which reads as
	 * ICR, is 0 again), bounded by the TSC: until bits 32-47 have moved on
	 * by 2, 2^32 to 2^33 cycles, 1 to 4 s at 2 to 4 GHz (jne rather than
	 * jb: the 16-bit target may have wrapped).
	 */
	rdtsc
	mov %dx, %cx
	inc %cx
	inc %cx
waitirq:
	addr32 cmpl $0, ICS(%ebx)
	je done
	pause
	rdtsc
	cmp %cx, %dx
	jne waitirq
	call say
	text "no interrupt", '\n'
done:
	call say
	text "done", '\n'

	/*
	 * Halt for good, with IF = 1: Xen takes a HLT with IF = 0 as the vCPU
	 * going down and powers the domain off once none is left, and the rig
	 * wants the guest alive until it destroys it.
	 */
	sti
halt:
	hlt
	jmp halt

/*
 * The MSI-X handler (real mode: the APIC's vector indexes the IVT). Reads
 * the causes (ICR) and writes them back, which clears them (the main path
 * waits for that), reports them, then EOI (APIC +B0h): without it the
 * vector's ISR bit stays set and holds back later interrupts.
 */
isr:
	pushal
	call say
	text "got interrupt, icr", ' '
	addr32 mov ICR(%ebx), %eax
	addr32 mov %eax, ICR(%ebx)
	call hex8nl
	xor %eax, %eax
	addr32 mov %eax, APIC+0xb0
	popal
	iret

/*
 * cfgsel: select config dword %bl of device %edi through port 0CF8h and
 * read it into %eax; %dx is then the data port, 0CFCh, for a write.
 */
cfgsel:
	mov %edi, %eax
	mov %bl, %al
	mov $0xcf8, %dx
	out %eax, %dx
	mov $0xfc, %dl
	in %dx, %eax
	ret

/*
 * say: "MSIXBOOT: " and then the text that follows the call, returning
 * past it; put: that text alone. say's own text is the prefix, and put
 * jumps past it, that is into put again, which then pops the caller's.
 */
say:
	call put
	text "MSIXBOOT:", ' '
put:
	pop %si
1:	lodsb
	btr $7, %ax		/* CF: the last character */
	out %al, $0xe9
	jnc 1b
	jmp *%si

/* hex8nl: %eax as 8 lower-case hex digits and a newline. */
hex8nl:
	mov $8, %cl
	call hex
	mov $'\n', %al
	out %al, $0xe9
	ret
/* hex: the top %cl nibbles of %eax, most significant first. */
hex:
	rol $4, %eax
	push %ax
	and $0x0f, %al
	cmp $10, %al		/* 0-9 -> '0'-'9', 10-15 -> 'A'-'F' */
	sbb $0x69, %al
	das
	or $0x20, %al		/* lower case; digits have bit 5 already */
	out %al, $0xe9
	pop %ax
	dec %cl
	jnz hex
	ret

/*
 * The GDT's one descriptor, at selector 08h: lgdt reads the GDTR, whose
 * base points 8 bytes before it (the null descriptor is never read).
 */
gdtr:
	.word 15
	.long flat - 8
flat:
	.quad 0x00cf92000000ffff	/* base 0, limit 4 GiB, data rw */

	.org 510		/* fails to assemble if the code grew past 510 bytes */
	.byte 0x55, 0xaa

	.section .note.GNU-stack, "", @progbits	/* no executable-stack note: quiet ld */
