;; An example Switchboard plugin (docs/plugins.md): refuses requests that
;; ask for a "jailbreak", and masks the word "password" as "********" in
;; requests and in answers (streamed ones whole, at their end: it exports
;; no sb_on_chunk). Build it with any WebAssembly text assembler, e.g. from
;; the repository:
;;   cargo run -q -p switchboard-tests --bin wat2wasm -- data-plane/plugins/examples/redact.wat > redact.wasm
;; (or `wat2wasm redact.wat`, `wasm-tools parse redact.wat -o redact.wasm`).
(module
  (memory (export "memory") 1)

  ;; The refusal: tag 'R', then the message (72 bytes in all).
  (data (i32.const 16) "RThis request was refused by the redact plugin: it asks for a jailbreak.")

  ;; Where the gateway writes its input: byte 1024 is kept for the tag of a
  ;; rewritten body, which is the input itself, changed in place.
  (func (export "sb_alloc") (param $len i32) (result i32)
    (local $pages i32)
    (local.set $pages
      (i32.div_u (i32.add (i32.add (local.get $len) (i32.const 1025)) (i32.const 65535))
                 (i32.const 65536)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then (drop (memory.grow (i32.sub (local.get $pages) (memory.size))))))
    (i32.const 1025))

  ;; (pointer << 32) | length: what a hook answers when it has a verdict.
  (func $verdict (param $at i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $at)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))

  ;; Whether "jailbreak" occurs in [at, at + len).
  (func $asks_for_jailbreak (param $at i32) (param $len i32) (result i32)
    (local $i i32) (local $last i32)
    (if (i32.lt_u (local.get $len) (i32.const 9)) (then (return (i32.const 0))))
    (local.set $last (i32.sub (i32.add (local.get $at) (local.get $len)) (i32.const 9)))
    (local.set $i (local.get $at))
    (loop $scan
      (if (i32.and
            (i64.eq (i64.load (local.get $i)) (i64.const 0x616572626c69616a)) ;; "jailbrea"
            (i32.eq (i32.load8_u (i32.add (local.get $i) (i32.const 8))) (i32.const 0x6b))) ;; "k"
        (then (return (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $scan (i32.le_u (local.get $i) (local.get $last))))
    (i32.const 0))

  ;; Overwrites each "password" in [at, at + len) with "********"; answers how many.
  (func $mask_passwords (param $at i32) (param $len i32) (result i32)
    (local $i i32) (local $last i32) (local $count i32)
    (if (i32.lt_u (local.get $len) (i32.const 8)) (then (return (i32.const 0))))
    (local.set $last (i32.sub (i32.add (local.get $at) (local.get $len)) (i32.const 8)))
    (local.set $i (local.get $at))
    (loop $scan
      (if (i64.eq (i64.load (local.get $i)) (i64.const 0x64726f7773736170)) ;; "password"
        (then
          (i64.store (local.get $i) (i64.const 0x2a2a2a2a2a2a2a2a)) ;; "********"
          (local.set $count (i32.add (local.get $count) (i32.const 1)))
          (local.set $i (i32.add (local.get $i) (i32.const 7)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $scan (i32.le_u (local.get $i) (local.get $last))))
    (local.get $count))

  ;; The body as changed in place, tagged 'B'; or 0 (continue) when nothing changed.
  (func $masked (param $at i32) (param $len i32) (result i64)
    (if (i32.eqz (call $mask_passwords (local.get $at) (local.get $len)))
      (then (return (i64.const 0))))
    (i32.store8 (i32.sub (local.get $at) (i32.const 1)) (i32.const 0x42)) ;; "B"
    (call $verdict (i32.sub (local.get $at) (i32.const 1)) (i32.add (local.get $len) (i32.const 1))))

  (func (export "sb_on_request") (param $at i32) (param $len i32) (result i64)
    (if (call $asks_for_jailbreak (local.get $at) (local.get $len))
      (then (return (call $verdict (i32.const 16) (i32.const 72)))))
    (call $masked (local.get $at) (local.get $len)))

  (func (export "sb_on_response") (param $at i32) (param $len i32) (result i64)
    (call $masked (local.get $at) (local.get $len))))
