_blobctl_completion() {
    local IFS=$'\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _BLOBCTL_LINE="${COMP_LINE:0:COMP_POINT}" \
                   _BLOBCTL_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _blobctl_completion blobctl
