from __future__ import annotations

import sys

from devices.agent.cli import main

sys.exit(main())
