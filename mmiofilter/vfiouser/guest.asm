; guest.asm - a PCI guest for the vfio-user end-to-end test: the project's firmware scheme
; (mmiofilter/kvm/firmware.asm: a flat 64 KiB image at the top of 4 GiB, protected mode, text
; on port 0xE9, exit through port 0xF4), plus what a guest needs to meet a PCI device that no
; BIOS has set up: it finds the device with configuration mechanism #1 (address to 0xCF8, data
; at 0xCFC: PCI Local Bus spec 3.0, 3.2.2.3.2), places BAR0 and enables memory decoding, then
; runs its MMIO program against the BAR.
;
; Program at 0x10000 (QEMU: -device loader): {u32 'MMIO', u32 count, u32 vendor | device << 16,
; u32 BAR0 address}, then `count` 16-byte operations {u32 op, u32 address, u32 value, u32 width}
; as firmware.asm has them (1 READ, 2 WRITE, 4 END; addresses guest-physical). Output lines:
;   P <bus/dev/fn as 0xCF8 sees it> <id>     the device found
;   B <BAR0 as read back>                     after placing it
;   R|W <width> <address> <value>             each operation
;   N (no program or no device), ? (unknown op), E (end; then port 0xF4)

BASE            equ 0xFFFF0000
MAGIC           equ 0x4F494D4D
PROGRAM         equ 0x10000
DEBUG_PORT      equ 0xE9
EXIT_PORT       equ 0xF4
CFG_ADDR        equ 0xCF8
CFG_DATA        equ 0xCFC

        org 0
        bits 16
start16:
        cli
        o32 lgdt [cs:gdt_desc]
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp dword 0x08:(BASE + start32)

        align 8                         ; accessed bits preset: the GDT is in ROM
gdt:    dq 0
        dq 0x00CF9B000000FFFF
        dq 0x00CF93000000FFFF
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
        mov esp, PROGRAM - 0x10
        cmp dword [PROGRAM], MAGIC
        jne .none

        ; scan bus 0, devices 0..31, function 0, for the vendor:device of the header
        mov ebx, 0x80000000             ; enable bit 31, bus 0, device 0, function 0, reg 0
.scan:  mov eax, ebx
        mov dx, CFG_ADDR
        out dx, eax
        mov dx, CFG_DATA
        in eax, dx
        cmp eax, [PROGRAM + 8]
        je .found
        add ebx, 0x800                  ; next device (bits 15:11)
        cmp ebx, 0x80010000
        jb .scan
.none:  mov al, 'N'
        call putc
        call newline
        jmp .end

.found: mov al, 'P'
        call putc
        call space
        mov eax, ebx
        call puthex
        call space
        mov eax, [PROGRAM + 8]
        call puthex
        call newline

        lea eax, [ebx + 0x10]           ; BAR0
        mov edi, [PROGRAM + 12]
        call cfg_write
        lea eax, [ebx + 0x10]
        call cfg_read
        push eax
        mov al, 'B'
        call putc
        call space
        pop eax
        call puthex
        call newline
        lea eax, [ebx + 0x04]           ; command: memory space on; status written as 0 (RW1C)
        call cfg_read
        and eax, 0xFFFF
        or eax, 0x2
        mov edi, eax
        lea eax, [ebx + 0x04]
        call cfg_write

        mov ecx, [PROGRAM + 4]
        lea esi, [PROGRAM + 16]
.next:  test ecx, ecx
        jz .end
        push ecx
        mov eax, [esi]
        cmp eax, 1
        je .read
        cmp eax, 2
        je .write
        cmp eax, 4
        je .endop
        mov al, '?'
        call putc
        call newline
.endop: pop ecx
        jmp .end
.done:  pop ecx
        add esi, 16
        dec ecx
        jmp .next

.read:  mov ebx, [esi + 4]
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

.write: mov ebx, [esi + 4]
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

.end:   mov al, 'E'
        call putc
        call newline
        mov al, 0
        out EXIT_PORT, al
.halt:  hlt
        jmp .halt

; config dword at address eax (0x80000000 | bus/dev/fn | reg): read into eax / write edi
cfg_read:
        mov dx, CFG_ADDR
        out dx, eax
        mov dx, CFG_DATA
        in eax, dx
        ret
cfg_write:
        mov dx, CFG_ADDR
        out dx, eax
        mov dx, CFG_DATA
        mov eax, edi
        out dx, eax
        ret

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

space:  mov al, ' '
        jmp putc
newline:
        mov al, 10
putc:   out DEBUG_PORT, al
        ret

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

        times 0xFFF0 - ($ - $$) db 0xF4
        bits 16
reset:  jmp start16
        times 0x10000 - ($ - $$) db 0xF4
