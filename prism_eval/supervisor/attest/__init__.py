"""Supervisor: the signed record — its models, signing, verification, DSSE, the environment.

`record` is the schema and canonical bytes; `signing` the only code touching a key;
`issuing` signs a finished evaluation and writes `--out` files; `verify` checks a record and
that its figures agree; `dsse` re-encodes one as a DSSE envelope; `environment` fingerprints
the host and the isolation table.

May import: `intake` (bundle files in the record), the supervisor's `config` and `formula`,
the protocol. Offers: the names in `__all__`.
"""

from prism_eval.supervisor.attest.dsse import export_envelope
from prism_eval.supervisor.attest.environment import (
    describe_environment,
    evaluator_identity,
    gpu_inventory,
    isolation_record,
)
from prism_eval.supervisor.attest.issuing import (
    UNWRITABLE_OUTPUT,
    SigningIdentity,
    prepare_out_dir,
    resolve_signing_key,
    sign_record,
    signed_record_bytes,
    write_outputs,
)
from prism_eval.supervisor.attest.record import (
    Artifacts,
    AuditFigures,
    DataRef,
    Inputs,
    PrefixAudit,
    RankFigures,
    RanksCheck,
    Reason,
    Record,
    ReviewSummary,
    RunFigures,
    Score,
    SignedRecord,
    Signer,
    StageResult,
    StageStatus,
    StepTimes,
    StreamSummary,
    Subject,
    TokenizerRef,
)
from prism_eval.supervisor.attest.signing import (
    Signature,
    generate_keypair,
    key_id,
    load_public_key,
    sign,
    verify_signature,
)
from prism_eval.supervisor.attest.verify import (
    TrustedKeys,
    Verified,
    parse_strict_json,
    verify_record,
)

__all__ = [
    "UNWRITABLE_OUTPUT",
    "Artifacts",
    "AuditFigures",
    "DataRef",
    "Inputs",
    "PrefixAudit",
    "RankFigures",
    "RanksCheck",
    "Reason",
    "Record",
    "ReviewSummary",
    "RunFigures",
    "Score",
    "Signature",
    "SignedRecord",
    "Signer",
    "SigningIdentity",
    "StageResult",
    "StageStatus",
    "StepTimes",
    "StreamSummary",
    "Subject",
    "TokenizerRef",
    "TrustedKeys",
    "Verified",
    "describe_environment",
    "evaluator_identity",
    "export_envelope",
    "generate_keypair",
    "gpu_inventory",
    "isolation_record",
    "key_id",
    "load_public_key",
    "parse_strict_json",
    "prepare_out_dir",
    "resolve_signing_key",
    "sign",
    "sign_record",
    "signed_record_bytes",
    "verify_record",
    "verify_signature",
    "write_outputs",
]
