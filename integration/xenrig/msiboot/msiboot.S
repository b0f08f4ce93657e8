/*
 * msiboot.S: a 512-byte MBR boot sector (GNU as, real mode) that finds
 * QEMU's edu PCI device (1234:11e8) on bus 0, enables its MSI capability,
 * has the device raise an interrupt and takes it through the real-mode
 * IVT. Each step is a "MSIBOOT: ..." line on the debug port 0xE9 (Xen
 * prints them in `xl dmesg` as "(dN) MSIBOOT: ..."; plain QEMU with
 * -device isa-debugcon,iobase=0xe9).
 *
 * The MSI config writes are the point: under Xen they make QEMU's xen_pt
 * map a pirq for the device (xc_physdev_map_pirq_msi) and bind it to the
 * guest vector (xc_domain_update_msi_irq).
 *
 * Built by build.go: as --32, ld -Ttext 0x7c00, objcopy -O binary.
 * Assembling with --defsym NO_MSI_ENABLE=1 leaves MSI disabled (the tests'
 * control: then no interrupt may arrive).
 *
 * Registers kept across the main path: %edi the PCI config address of
 * the device (0x80000000 | dev << 11: bus 0, function 0), %ebp edu's
 * BAR 0, %fs a flat 4 GiB segment (unreal mode, below). %bl is a config
 * register offset for cfgsel (always a multiple of 4: config space is
 * read and written as whole dwords, or the low half of one), %bh the MSI
 * capability's offset.
 *
 * It has to fit 510 bytes, hence the terse code: strings follow the call
 * that prints them, and the 16-bit code carries operand/address-size
 * prefixes for all the 32-bit values.
 */

	.set VECTOR, 0x60	/* IVT 60h-66h are for user programs: no BIOS service displaced */
	.set RAISE, 0x5a	/* written to edu's raise register, read back as its status */
	.set EDU_ID, 0x11e81234
	.set APIC, 0xfee00000	/* local APIC registers (physical) */

	.code16
	.text
	.globl start
/*
 * SeaBIOS enters at 0000:7C00 with IF = 1 and its boot stack (SS:SP below
 * 7C00h), which is used as it is.
 */
start:
	cli
	xor %ax, %ax
	mov %ax, %ds

	/*
	 * Unreal mode: the APIC and the BAR are above 1 MiB, out of reach of
	 * real-mode segments. Set CR0.PE for two instructions, load %fs with a
	 * flat 4 GiB data descriptor and clear PE again: in real mode a
	 * segment keeps the limit it was given, so %fs (base 0) then reaches
	 * all of memory through 32-bit addresses. CS keeps its real-mode cache
	 * meanwhile, so no far jump is needed; interrupts are off (no IDT).
	 */
	lgdt gdt
	mov %cr0, %eax
	inc %ax			/* PE, bit 0, clear in real mode */
	mov %eax, %cr0
	push $8
	pop %fs
	dec %ax
	mov %eax, %cr0

	/*
	 * Mask both 8259s for good: a BIOS interrupt handler may reload
	 * every segment register (SeaBIOS does around each of its 32-bit
	 * calls), which would end unreal mode; the MSI does not go through
	 * them. Fast A20 (port 92h): with A20 masked a BAR whose address has
	 * bit 20 set would be reached 1 MiB lower (bit 0 would reset).
	 */
	mov $0xff, %al
	out %al, $0x21
	out %al, $0xa1
	mov $2, %al
	out %al, $0x92

	/* Scan bus 0, devices 0..31, function 0, for the edu device. */
	mov $0x80000000, %edi
scan:
	mov $0, %bl
	call cfgsel
	in %dx, %eax
	cmp $EDU_ID, %eax
	je found
	add $0x800, %di		/* next device; wraps to 0 after device 31 */
	jnz scan
	call say
	.asciz "no edu\n"
	jmp done

found:
	call say
	.asciz "edu at 00:"
	mov %edi, %eax
	shl $13, %eax		/* the device number is now the top byte */
	mov $2, %cl
	call hex
	call put
	.asciz ".0 bar0 "

	/* BAR 0: a 32-bit memory BAR that hvmloader or SeaBIOS placed. */
	mov $0x10, %bl
	call cfgsel
	in %dx, %eax
	and $0xfffffff0, %eax
	mov %eax, %ebp		/* before hexnl clobbers %al */
	mov $8, %cl
	call hexnl

	/*
	 * Command register: memory decode for the BAR, and bus master, since
	 * an MSI is a memory write by the device: without it QEMU drops it.
	 */
	mov $0x04, %bl
	call cfgsel
	in %dx, %al
	or $0x06, %al
	out %al, %dx

	/*
	 * The capability list, for MSI (id 05h). Unbounded: a list that loops
	 * would hang here (the harness times out); a bound does not fit.
	 */
	mov $0x34, %bl
	call cfgsel
	in %dx, %al
capnext:
	and $0xfc, %al
	jz nomsi
	mov %al, %bl
	call cfgsel
	in %dx, %eax		/* id, next, message control (bits 16..31) */
	mov %eax, %esi
	cmp $0x05, %al
	je msi
	mov %ah, %al
	jmp capnext
nomsi:
	/* edu then falls back to INTx, which this sector does not route. */
	call say
	.asciz "no msi\n"
	jmp done

msi:
	mov %bl, %bh

	/*
	 * The local APIC accepts no fixed interrupt while software-disabled
	 * (SVR bit 8). SeaBIOS enables it under plain QEMU; under Xen that
	 * is not known, so set it (a read-modify-write: the rest stays).
	 */
	addr32 mov %fs:APIC+0xf0, %eax
	or $1, %ah
	addr32 mov %eax, %fs:APIC+0xf0

	/*
	 * Message address 0xFEE00000: physical destination APIC ID 0, the
	 * boot CPU's under QEMU and Xen alike. With a 64-bit address (control
	 * bit 7) the upper half, at +8, keeps its reset value 0 and the data
	 * is at +0Ch, else at +8. The data: fixed delivery, edge, the vector.
	 */
	add $4, %bl
	call cfgsel
	mov $APIC, %eax
	out %eax, %dx
	mov %esi, %eax
	shr $21, %eax
	and $4, %al
	add $4, %al
	add %al, %bl
	call cfgsel
	mov $VECTOR, %ax
	out %ax, %dx

	/* The handler, in place before anything can be delivered (IF = 0). */
	movl $isr, VECTOR*4	/* offset isr, segment 0 */

	/*
	 * Enable last, address and data in place: here xen_pt maps the pirq.
	 * Written as the capability's first dword (id and next are read-only).
	 */
	mov %bh, %bl
	call cfgsel
	mov %esi, %eax
	.ifndef NO_MSI_ENABLE	/* a test's control: the same write, enable bit clear */
	bts $16, %eax
	.endif
	out %eax, %dx
	call say
	.ascii "msi enabled, vector 0x60\n\0"
	.if VECTOR != 0x60
	.error "VECTOR changed: change the message above"
	.endif

	/* Raise: edu sends its MSI (INTx were MSI off); IF = 1 lets it in. */
	addr32 movl $RAISE, %fs:0x60(%ebp)
	sti

	/*
	 * Wait until the handler has acknowledged the interrupt (edu's status
	 * is 0 again; nothing else writes it), bounded by the TSC rather than
	 * by interrupts that might never come: until the TSC's high half has
	 * moved on by 2, 2^32 to 2^33 cycles, 1 to 4 s at 2 to 4 GHz.
	 */
	rdtsc
	lea 2(%edx), %ecx
waitirq:
	addr32 cmpl $0, %fs:0x24(%ebp)
	je done
	pause
	rdtsc
	cmp %ecx, %edx
	jb waitirq
	call say
	.asciz "no interrupt\n"
done:
	call say
	.asciz "done\n"

	/*
	 * Halt for good, but with IF = 1: Xen takes a HLT with IF = 0 as the
	 * vCPU going down and powers the domain off once none is left, and
	 * the rig wants the guest alive until it destroys it. Nothing wakes it
	 * (8259s masked, edu acknowledged).
	 */
	sti
halt:
	hlt
	jmp halt

/*
 * The MSI handler (real mode: the APIC's vector indexes the IVT). Reads
 * edu's interrupt status (+24h) and acknowledges exactly those bits (+64h,
 * which would also lower INTx; the main path waits for the status to be
 * 0), reports the status, then EOI (APIC +B0h): without it the vector's
 * ISR bit stays set and the APIC holds back every later interrupt of this
 * priority class or lower.
 */
isr:
	pushal
	call say
	.asciz "got interrupt, status "
	addr32 mov %fs:0x24(%ebp), %eax
	addr32 mov %eax, %fs:0x64(%ebp)
	mov $8, %cl
	call hexnl
	xor %eax, %eax
	addr32 mov %eax, %fs:APIC+0xb0
	popal
	iret

/*
 * cfgsel: select config dword %bl (a multiple of 4) of device %edi
 * through port 0CF8h; the data is then at port 0CFCh (%dx).
 */
cfgsel:
	mov %edi, %eax
	mov %bl, %al
	mov $0xcf8, %dx
	out %eax, %dx
	mov $0xfc, %dl
	ret

/*
 * say: "MSIBOOT: " and then the string that follows the call, returning
 * past its NUL; put: that string alone. say's own string is the prefix,
 * and put jumps past it, that is into put again, which then pops the
 * caller's string.
 */
say:
	call put
	.asciz "MSIBOOT: "
put:
	pop %si
1:	lodsb
	test %al, %al
	jz 2f
	out %al, $0xe9
	jmp 1b
2:	jmp *%si

/*
 * hex: the top %cl nibbles of %eax, lower-case, most significant first;
 * hexnl: then a newline (which clobbers %al).
 */
hexnl:
	call hex
	mov $'\n', %al
	out %al, $0xe9
	ret
hex:
	pushal
1:	rol $4, %eax
	push %ax
	and $0x0f, %al
	cmp $10, %al		/* 0-9 -> '0'-'9', 10-15 -> 'A'-'F' */
	sbb $0x69, %al
	das
	or $0x20, %al		/* lower case; digits have bit 5 already */
	out %al, $0xe9
	pop %ax
	dec %cl
	jnz 1b
	popal
	ret

/* GDT; its null descriptor holds the GDTR (limit, base) lgdt reads. */
gdt:
	.word gdt_end - gdt - 1
	.long gdt
	.word 0
	.quad 0x00cf92000000ffff	/* 08h: base 0, limit 4 GiB, data rw */
gdt_end:

	.org 510		/* fails to assemble if the code grew past 510 bytes */
	.byte 0x55, 0xaa

	.section .note.GNU-stack, "", @progbits	/* no executable-stack note: quiet ld */
