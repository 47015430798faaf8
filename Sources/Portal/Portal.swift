import FZCore
