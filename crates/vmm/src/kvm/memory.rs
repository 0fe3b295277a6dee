//! Guest memory of a KVM VM: one anonymous mapping, registered with KVM as slot 0.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::{kvm_op, KvmError};

/// Maps `size` bytes at guest address 0 and hands them to the VM. The mapping is
/// lazily backed: a 2 MiB guest costs only the pages the image and guest touch.
pub fn create(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, KvmError> {
    let len = usize::try_from(size).map_err(|_| KvmError::Internal("memory size"))?;
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len)])
        .map_err(|e| KvmError::Memory(format!("cannot map {size} bytes: {e}")))?;
    for (slot, region) in memory.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| KvmError::Memory(e.to_string()))?;
        let descriptor = kvm_userspace_memory_region {
            slot: u32::try_from(slot).map_err(|_| KvmError::Internal("slot"))?,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of exactly `memory_size` bytes owned by
        // `memory`, which the caller keeps alive as long as the VM (the `Vm` struct
        // owns both and drops the VM file descriptors first).
        unsafe { vm.set_user_memory_region(descriptor) }
            .map_err(kvm_op("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(memory)
}
