//! Loads and stores of frame fields at their full width. Headers sit at any alignment in a
//! frame (after the 14-byte Ethernet header, IPv4's words are 2 bytes off a word boundary),
//! and LLVM's BPF backend splits an unaligned read (`read_unaligned`, or a byte-array field)
//! into byte loads, shifts and ors: a MAC compare took 30 instructions, an address 10. The
//! BPF instruction set itself loads and stores at any alignment (the verifier checks packet
//! alignment only under BPF_F_STRICT_ALIGNMENT, which lbd never sets, and the x86-64 and
//! arm64 JITs emit plain moves), so these are one load or store of the value's width, as C
//! programs read `struct iphdr`. The target is little-endian (`bpfel`): a value's bytes are
//! the wire's bytes in order.

/// The `T` at `ptr`, in one load. `T` is an integer or an array of them.
///
/// # Safety
/// `ptr..ptr + size_of::<T>()` is within the frame (bounds-checked against `data_end`) or a
/// map value.
#[inline(always)]
pub unsafe fn load<T: Copy>(ptr: *const u8) -> T {
    // SAFETY: in bounds (the caller's promise); alignment is not required by BPF (above).
    unsafe { *(ptr as *const T) }
}

/// Stores `value` at `ptr` in one store.
///
/// # Safety
/// As [`load`].
#[inline(always)]
pub unsafe fn store<T: Copy>(ptr: *mut u8, value: T) {
    // SAFETY: as `load`.
    unsafe { *(ptr as *mut T) = value }
}

/// The 6-byte MAC at `ptr` as a number (two loads), for one compare.
///
/// # Safety
/// As [`load`], for 6 bytes.
#[inline(always)]
pub unsafe fn mac(ptr: *const u8) -> u64 {
    // SAFETY: the caller's promise covers both loads.
    unsafe { load::<u32>(ptr) as u64 | (load::<u16>(ptr.add(4)) as u64) << 32 }
}

/// Writes the MAC `value` (as [`mac`] reads it) at `ptr` (two stores).
///
/// # Safety
/// As [`load`], for 6 bytes.
#[inline(always)]
pub unsafe fn set_mac(ptr: *mut u8, value: u64) {
    // SAFETY: the caller's promise covers both stores.
    unsafe {
        store::<u32>(ptr, value as u32);
        store::<u16>(ptr.add(4), (value >> 32) as u16);
    }
}
