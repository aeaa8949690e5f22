/**
 * The accelerate config files of an exported TRL job (see trl_job.ts), as `accelerate config`
 * writes them; these are TRL 1.9.0's examples/accelerate_configs (single_gpu, multi_gpu, fsdp2,
 * deepspeed_zero3). `--num_processes N` on the accelerate launch line overrides their 8.
 */

export const ACCELERATE_CONFIGS: Record<string, { file: string; what: string; yaml: string }> = {
  single_gpu: {
    file: 'accelerate/single_gpu.yaml',
    what: 'one GPU',
    yaml: `compute_environment: LOCAL_MACHINE
debug: false
distributed_type: "NO"
downcast_bf16: 'no'
gpu_ids: all
machine_rank: 0
main_training_function: main
mixed_precision: 'bf16'
num_machines: 1
num_processes: 1
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: false
`,
  },
  multi_gpu: {
    file: 'accelerate/multi_gpu.yaml',
    what: 'several GPUs, data parallel (DDP): a copy of the model on each',
    yaml: `compute_environment: LOCAL_MACHINE
debug: false
distributed_type: MULTI_GPU
downcast_bf16: 'no'
gpu_ids: all
machine_rank: 0
main_training_function: main
mixed_precision: 'bf16'
num_machines: 1
num_processes: 8
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: false
`,
  },
  fsdp: {
    file: 'accelerate/fsdp.yaml',
    what: 'several GPUs, the model sharded across them (FSDP 2)',
    yaml: `# Requires accelerate 1.7.0 or higher
compute_environment: LOCAL_MACHINE
debug: false
distributed_type: FSDP
downcast_bf16: 'no'
enable_cpu_affinity: false
fsdp_config:
  fsdp_activation_checkpointing: false
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_cpu_ram_efficient_loading: true
  fsdp_offload_params: false
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_version: 2
machine_rank: 0
main_training_function: main
mixed_precision: bf16
num_machines: 1
num_processes: 8
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: false
`,
  },
  deepspeed_zero3: {
    file: 'accelerate/deepspeed_zero3.yaml',
    what: 'several GPUs, parameters, gradients and optimizer state sharded (DeepSpeed ZeRO-3)',
    yaml: `compute_environment: LOCAL_MACHINE
debug: false
deepspeed_config:
  deepspeed_multinode_launcher: standard
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: true
  zero3_save_16bit_model: true
  zero_stage: 3
distributed_type: DEEPSPEED
downcast_bf16: 'no'
machine_rank: 0
main_training_function: main
mixed_precision: bf16
num_machines: 1
num_processes: 8
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
use_cpu: false
`,
  },
};
