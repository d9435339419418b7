; guest.asm - a PCI guest for the vfio-user end-to-end test: the project's firmware scheme
; (mmiofilter/kvm/guest_ops.inc, shared with mmiofilter/kvm/firmware.asm: a flat 64 KiB image
; at the top of 4 GiB, protected mode, text on port 0xE9, exit through port 0xF4), plus what a
; guest needs to meet a PCI device that no BIOS has set up: it finds the device with
; configuration mechanism #1 (address to 0xCF8, data at 0xCFC: PCI Local Bus spec 3.0,
; 3.2.2.3.2), places BAR0 and enables memory decoding, then runs its MMIO program against the
; BAR.
;
; Program at 0x10000 (QEMU: -device loader): {u32 'MMIO', u32 count, u32 vendor | device << 16,
; u32 BAR0 address}, then `count` 16-byte operations as guest_ops.inc has them (1 READ,
; 2 WRITE, 4 END, ...; addresses guest-physical). Output lines, before the operations':
;   P <bus/dev/fn as 0xCF8 sees it> <id>     the device found
;   B <BAR0 as read back>                     after placing it
;   N (no program or no device)

%include "guest_ops.inc"

PROGRAM         equ 0x10000
CFG_ADDR        equ 0xCF8
CFG_DATA        equ 0xCFC

main:
        mov ebp, PROGRAM
        lea esp, [ebp - 0x10]
        cmp dword [ebp], MAGIC
        jne no_program

        ; scan bus 0, devices 0..31, function 0, for the vendor:device of the header
        mov ebx, 0x80000000             ; enable bit 31, bus 0, device 0, function 0, reg 0
.scan:  mov eax, ebx
        call cfg_read
        cmp eax, [ebp + 8]
        je .found
        add ebx, 0x800                  ; next device (bits 15:11)
        cmp ebx, 0x80010000
        jb .scan
        jmp no_program

.found: mov al, 'P'
        call putc
        call space
        mov eax, ebx
        call puthex
        call space
        mov eax, [ebp + 8]
        call puthex
        call newline

        lea eax, [ebx + 0x10]           ; BAR0
        mov edi, [ebp + 12]
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
        jmp run_program                 ; header words 2-3 are scratch from here

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

        reset_vector
