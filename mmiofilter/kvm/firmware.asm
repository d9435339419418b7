; firmware.asm - the guest driver: a flat 64 KiB firmware image, booted like a PC BIOS.
;
; Assembled with nasm (Debian package nasm) when first needed: mmiofilter/kvm/firmware.py.
;
; The image sits at the top of 4 GiB; the CPU starts at the reset vector 0xFFFFFFF0 in real
; mode, with CS based at 0xFFFF0000. We load a flat GDT, enter 32-bit protected mode and run a
; program of MMIO operations that the host put in guest RAM (our VMM writes it; QEMU loads it
; with -device loader). ESI at reset selects the program: the host sets it to the vCPU's index
; (0 on QEMU), and program i lives at 0x10000 * (i + 1).
;
; Program: a 16-byte header {u32 magic 'MMIO', u32 count, u32 0, u32 0}, then `count` 16-byte
; operations {u32 op, u32 address, u32 value, u32 arg}, addresses being guest-physical:
;   1 READ        arg = width 1, 2 or 4        prints  "R <w> <address> <value>"
;   2 WRITE       arg = width 1, 2 or 4        prints  "W <w> <address> <value>"
;   3 LOOP_READ   arg = count: 32-bit reads    prints  "T <count> <tsc cycles, 64-bit>"
;   4 END                                      prints  "E", then writes port 0xF4 (exit)
;   5 RMW         arg = kind | count << 8      prints  "M <kind> <address> <edi after>"
;                 an instruction that reads and writes the address in one, operand = value:
;                 1 or dword  2 lock bts dword (bit = value)  3 lock or dword  4 xchg dword
;                 (edi after = the old value)  5 rep movsd of `count` dwords from RAM at value
;                 6 or word  7 or byte
;   6 LOOP_WRITE  arg = count: 32-bit writes   prints  "T <count> <tsc cycles, 64-bit>"
;   7 WRITE64     value = low, arg = high dword  prints  "W 8 <address> <value, 64-bit>"
;   8 READ64                                   prints  "R 8 <address> <value, 64-bit>"
;   9 SSE_STORE   movss [address], xmm0 (4 bytes; KVM's emulator has no movss)  "S"
;  10 CPUID       value = leaf (subleaf 0)     prints  "C <eax> <ebx> <ecx> <edx>"
;  11 PUSHAD      pushad with esp = address (a stack on that page)   prints  "P"
;  12 STORE128    movdqu [address], xmm0 of the operation's own 16 bytes   prints  "X"
; The 64-bit accesses are MMX movq (KVM emulates 0F 6F / 0F 7F on MMIO); no emms follows,
; as nothing here uses the x87 registers.
; Output is text on port 0xE9, one line per operation: QEMU's isa-debugcon prints it, our VMM
; reads it from the I/O exits. The timed loop does nothing but the reads, so a loop of N reads
; costs N MMIO exits (or none, on a page the VMM mapped directly) and its TSC delta is theirs.

BASE            equ 0xFFFF0000
MAGIC           equ 0x4F494D4D          ; 'MMIO' little-endian
DEBUG_PORT      equ 0xE9
EXIT_PORT       equ 0xF4
PROGRAM_STRIDE  equ 0x10000

        org 0
        bits 16
start16:
        cli
        o32 lgdt [cs:gdt_desc]          ; 32-bit base: the GDT lives in this ROM, above 4G-64K
        mov eax, cr0
        or al, 1                        ; PE
        mov cr0, eax
        jmp dword 0x08:(BASE + start32)

        ; The accessed bits are preset: the GDT is in ROM, and a CPU that had to set them would
        ; write to ROM, which KVM cannot complete for an implicit descriptor access.
        align 8
gdt:    dq 0
        dq 0x00CF9B000000FFFF           ; 0x08: code, base 0, limit 4 GiB, 32-bit, accessed
        dq 0x00CF93000000FFFF           ; 0x10: data, base 0, limit 4 GiB, accessed
gdt_desc:
        dw gdt_desc - gdt - 1
        dd BASE + gdt

        bits 32
start32:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov fs, ax
        mov gs, ax
        mov eax, cr4
        or eax, 0x200                   ; OSFXSR: SSE instructions execute (CR4 bit 9)
        mov cr4, eax
        mov eax, esi                    ; vCPU index from the host
        inc eax
        shl eax, 16                     ; program at 0x10000 * (index + 1)
        mov ebp, eax
        lea esp, [eax - 0x10]           ; the stack grows down below the program
        cmp dword [ebp], MAGIC
        jne .noprogram
        mov ecx, [ebp + 4]
        lea esi, [ebp + 16]
.next:
        test ecx, ecx
        jz .end
        push ecx
        mov eax, [esi]
        cmp eax, 1
        je .read
        cmp eax, 2
        je .write
        cmp eax, 3
        je .loop
        cmp eax, 4
        je .end
        cmp eax, 5
        je .rmw
        cmp eax, 6
        je .wloop
        cmp eax, 7
        je .write64
        cmp eax, 8
        je .read64
        cmp eax, 9
        je .sse
        cmp eax, 10
        je .cpuid
        cmp eax, 11
        je .pushad
        cmp eax, 12
        je .store128
        mov al, '?'                     ; unknown operation: say so and stop
        call putc
        jmp .end
.done:
        pop ecx
        add esi, 16
        dec ecx
        jmp .next

.read:
        mov ebx, [esi + 4]
        mov edx, [esi + 12]
        cmp edx, 1
        je .r1
        cmp edx, 2
        je .r2
        mov edi, [ebx]
        jmp .rprint
.r1:    movzx edi, byte [ebx]
        jmp .rprint
.r2:    movzx edi, word [ebx]
.rprint:
        mov al, 'R'
        call op_line
        jmp .done

.write:
        mov ebx, [esi + 4]
        mov edi, [esi + 8]
        mov edx, [esi + 12]
        cmp edx, 1
        je .w1
        cmp edx, 2
        je .w2
        mov [ebx], edi
        jmp .wprint
.w1:    mov eax, edi
        mov [ebx], al
        jmp .wprint
.w2:    mov eax, edi
        mov [ebx], ax
.wprint:
        mov al, 'W'
        call op_line
        jmp .done

.write64:
        mov ebx, [esi + 4]
        movq mm0, [esi + 8]             ; value and arg: the 64-bit value, little-endian
        movq [ebx], mm0
        mov al, 'W'
        call op64_line
        jmp .done

.read64:
        mov ebx, [esi + 4]
        movq mm0, [ebx]
        movq [ebp + 8], mm0             ; header words 2-3: scratch
        mov al, 'R'
        call op64_line
        jmp .done

.sse:
        mov ebx, [esi + 4]
        movss [ebx], xmm0
        mov al, 'S'
        call putc
        call newline
        jmp .done

.store128:
        mov ebx, [esi + 4]
        movdqu xmm0, [esi]
        movdqu [ebx], xmm0
        mov al, 'X'
        call putc
        call newline
        jmp .done

.pushad:
        mov edx, esp
        mov esp, [esi + 4]
        pushad                          ; 8 dwords below the address
        mov esp, edx
        mov al, 'P'
        call putc
        call newline
        jmp .done

.cpuid:
        mov eax, [esi + 8]
        xor ecx, ecx
        cpuid
        push edx
        push ecx
        push ebx
        push eax
        mov al, 'C'
        call putc
        mov ecx, 4
.c:     call space
        pop eax
        call puthex
        dec ecx
        jnz .c
        call newline
        jmp .done

.loop:
        mov ebx, [esi + 4]
        mov ecx, [esi + 12]
        push ecx
        rdtsc
        mov [ebp + 8], eax              ; header words 2-3: scratch for the start time
        mov [ebp + 12], edx
        test ecx, ecx
        jz .lend
.l:     mov eax, [ebx]                  ; the timed access: nothing else in the loop
        dec ecx
        jnz .l
.lend:  rdtsc
        sub eax, [ebp + 8]
        sbb edx, [ebp + 12]
        pop ecx
        push eax
        push edx
        mov al, 'T'
        call putc
        call space
        mov eax, ecx
        call puthex
        call space
        pop eax                         ; cycles, high word first
        call puthex
        pop eax
        call puthex
        call newline
        jmp .done

; A read-modify-write of [ebx]: on a read-only mapping the read is served from memory and only
; the write exits, with the value the CPU computed.
.rmw:
        mov ebx, [esi + 4]
        mov edi, [esi + 8]
        movzx edx, byte [esi + 12]
        cmp edx, 1
        je .m1
        cmp edx, 2
        je .m2
        cmp edx, 3
        je .m3
        cmp edx, 4
        je .m4
        cmp edx, 5
        je .m5
        cmp edx, 6
        je .m6
        mov eax, edi
        or [ebx], al
        jmp .mprint
.m1:    or [ebx], edi
        jmp .mprint
.m2:    lock bts dword [ebx], edi
        jmp .mprint
.m3:    lock or [ebx], edi
        jmp .mprint
.m4:    xchg [ebx], edi
        jmp .mprint
.m5:    push esi
        mov ecx, [esi + 12]
        shr ecx, 8
        mov esi, edi                    ; source: guest RAM
        mov edi, ebx                    ; destination: the BAR
        cld
        rep movsd
        pop esi
        mov edi, [esi + 8]
        jmp .mprint
.m6:    or [ebx], di
.mprint:
        mov al, 'M'
        call op_line
        jmp .done

.wloop:
        mov ebx, [esi + 4]
        mov edi, [esi + 8]
        mov ecx, [esi + 12]
        push ecx
        rdtsc
        mov [ebp + 8], eax
        mov [ebp + 12], edx
        test ecx, ecx
        jz .lend
.wl:    mov [ebx], edi                  ; the timed access: nothing else in the loop
        dec ecx
        jnz .wl
        jmp .lend

.noprogram:
        mov al, 'N'
        call putc
        call newline
.end:
        mov al, 'E'
        call putc
        call newline
        mov al, 0
        out EXIT_PORT, al
.halt:  hlt
        jmp .halt

; "<al> <width> <address> <value>\n" for the operation at esi, value in edi
op_line:
        call putc
        call space
        mov eax, [esi + 12]
        add al, '0'
        call putc
        call space
        mov eax, [esi + 4]
        call puthex
        call space
        mov eax, edi
        call puthex
        call newline
        ret

; "<al> 8 <address> <value, 16 hex digits>\n": a WRITE64's value is at esi+8, a READ64's at
; ebp+8
op64_line:
        call putc
        call space
        mov al, '8'
        call putc
        call space
        mov eax, [esi + 4]
        call puthex
        call space
        lea edx, [esi + 8]
        cmp byte [esi], 5
        je .v
        lea edx, [ebp + 8]
.v:     mov eax, [edx + 4]
        call puthex
        mov eax, [edx]
        call puthex
        jmp newline

space:  mov al, ' '
        jmp putc
newline:
        mov al, 10
putc:   out DEBUG_PORT, al
        ret

; eax as 8 hex digits
puthex: push ecx
        push edx
        mov edx, eax
        mov ecx, 8
.h:     rol edx, 4
        mov eax, edx
        and eax, 0xF
        cmp al, 10
        jb .digit
        add al, 'a' - 10 - '0'
.digit: add al, '0'
        call putc
        dec ecx
        jnz .h
        pop edx
        pop ecx
        ret

        times 0xFFF0 - ($ - $$) db 0xF4 ; hlt: a stray jump stops instead of running zeros
        bits 16
reset:  jmp start16                     ; the reset vector, at 0xFFFFFFF0
        times 0x10000 - ($ - $$) db 0xF4
