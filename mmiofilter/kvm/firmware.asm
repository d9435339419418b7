; firmware.asm - the guest driver: a flat 64 KiB firmware image, booted like a PC BIOS.
;
; Assembled with nasm (Debian package nasm) when first needed: mmiofilter/kvm/firmware.py.
; The boot, the program format and its operations are guest_ops.inc's, shared with the PCI
; guest of the vfio-user test (mmiofilter/vfiouser/guest.asm).
;
; The program is one the host put in guest RAM (our VMM writes it; QEMU loads it with -device
; loader). ESI at reset selects it: the host sets it to the vCPU's index (0 on QEMU), and
; program i lives at 0x10000 * (i + 1). Header words 2-3 are 0.

%include "guest_ops.inc"

main:
        mov eax, esi                    ; vCPU index from the host
        inc eax
        shl eax, 16                     ; program at 0x10000 * (index + 1)
        mov ebp, eax
        lea esp, [eax - 0x10]           ; the stack grows down below the program
        cmp dword [ebp], MAGIC
        jne no_program
        jmp run_program

        reset_vector
